"""sql/003_catalog.sql on a database that already holds bindings: nothing is guessed."""

import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest
from yarl import URL

from groupbuy_async.db import SQL_DIR, migrate


async def test_catalog_migration_stops_on_a_binding_its_sku_disagrees_with(
    server_urls: tuple[str, str], tmp_path: Path
) -> None:
    admin_dsn = server_urls[0]
    for name in ("001_trade.sql", "002_notify.sql"):
        shutil.copy(SQL_DIR / name, tmp_path / name)
    name = f"groupbuy_test_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = str(URL(admin_dsn).with_path(f"/{name}"))
    try:
        assert await migrate(url, tmp_path) == ["001_trade.sql", "002_notify.sql"]
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO group_buy_discount (discount_id, discount_name, market_plan,"
                " market_expr) VALUES ('d1', 'd', 'ZJ', '1');"
                " INSERT INTO sku (goods_id, source, channel, goods_name, original_price)"
                " VALUES ('g1', 's01', 'c01', 'g', 10), ('g2', 's01', 'c01', 'g', 10);"
                " INSERT INTO group_buy_activity (activity_id, activity_name, discount_id,"
                " start_time, end_time) VALUES (7, 'a', 'd1', now(), now() + interval '1 day');"
                " INSERT INTO sc_sku_activity (source, channel, goods_id, activity_id)"
                " VALUES ('s02', 'c02', 'g1', 7), ('s01', 'c01', 'g2', 7)"
            )
            with pytest.raises(asyncpg.RaiseError) as refused:
                await migrate(url)
            assert "activity 7 binds goods g1 under s02/c02 but the SKU is s01/c01" in str(
                refused.value
            )
            assert "g2" not in str(refused.value)
            assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 2
            await conn.execute(
                "UPDATE sku SET source = 's02', channel = 'c02' WHERE goods_id = 'g1'"
            )
            assert (await migrate(url))[0] == "003_catalog.sql"
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
