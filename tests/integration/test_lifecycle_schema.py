"""sql/006_lifecycle.sql: PostgreSQL refuses what is not a lifecycle change, whoever writes it,
and the migration gives locks already waiting a deadline."""

import json
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest
from yarl import URL

from groupbuy_async.db import SQL_DIR, create_pool, migrate
from groupbuy_async.settings import Settings
from groupbuy_async.trade import expiry
from groupbuy_async.worker.arq_worker import build_worker

from ..conftest import Api, new_id

_ORDER = "UPDATE group_buy_order_list SET {} WHERE out_trade_no = $1"
_TEAM = "UPDATE group_buy_order SET {} WHERE team_id = $1"


async def _locked(api: Api, act: dict[str, str], team_id: str | None = None) -> tuple[str, str]:
    body = {**act, "userId": new_id("u"), "outTradeNo": new_id()}
    if team_id:
        body["teamId"] = team_id
    status, env = await api.lock(**body)
    assert status == 200, env
    return env["data"]["teamId"], body["outTradeNo"]


@pytest.mark.parametrize(
    ("before", "change"),
    [
        ("status = 1", "status = 0"),  # paid -> locked
        ("status = 2, biz_id = NULL", "status = 1"),  # closed -> paid
        ("status = 2, biz_id = NULL", "status = 0, biz_id = 'x'"),  # reopened
        ("status = 1", "status = 3"),  # refunded without a refund type
        ("", "status = 3, biz_id = NULL, refund_type = 'paid'"),  # locked -> refunded
        ("", "status = 2"),  # closed but still holding its take
        ("", "status = 4"),
        ("", "pay_deadline = NULL"),
    ],
)
async def test_orders_move_only_along_the_lifecycle(
    api: Api, pool: asyncpg.Pool, before: str, change: str
) -> None:
    act = await api.new_activity()
    _, out = await _locked(api, act)
    if before:
        await pool.execute(_ORDER.format(before), out)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(_ORDER.format(change), out)


@pytest.mark.parametrize(
    ("before", "change"),
    [
        ("", "status = 3"),  # forming -> complete with refunds
        ("status = 2, lock_count = 0", "status = 0"),  # failed -> forming
        ("status = 2, lock_count = 0", "complete_count = 1, lock_count = 1"),  # counts kept
        ("status = 1, complete_count = 1, lock_count = 1", "status = 2"),
        ("status = 1, complete_count = 1, lock_count = 1", "status = 3, complete_count = 0"),
        ("", "status = 1"),  # complete but not full
        ("", "status = 2"),  # failed, counting an unpaid lock (a failed team counts payments)
    ],
)
async def test_teams_move_only_along_the_lifecycle(
    api: Api, pool: asyncpg.Pool, before: str, change: str
) -> None:
    act = await api.new_activity(target=1)
    team_id, _ = await _locked(api, act)
    if before:
        await pool.execute(_TEAM.format(before), team_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(_TEAM.format(change), team_id)


async def test_migration_gives_waiting_locks_a_deadline_and_failed_teams_their_event(
    server_urls: tuple[str, str], tmp_path: Path
) -> None:
    admin_dsn = server_urls[0]
    for path in SQL_DIR.glob("*.sql"):
        if path.name < "006":
            shutil.copy(path, tmp_path / path.name)
    name = f"groupbuy_test_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = str(URL(admin_dsn).with_path(f"/{name}"))
    try:
        await migrate(url, tmp_path)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO group_buy_discount (discount_id, discount_name, market_plan,"
                " market_expr) VALUES ('d1', 'd', 'ZJ', '1');"
                " INSERT INTO group_buy_activity (activity_id, activity_name, discount_id,"
                " start_time, end_time) VALUES (7, 'a', 'd1', now(), now() + interval '1 day');"
                " INSERT INTO group_buy_order (team_id, activity_id, source, channel,"
                " original_price, deduction_price, pay_price, target_count, complete_count,"
                " lock_count, valid_start_time, valid_end_time, notify_url) VALUES"
                " ('10000001', 7, 's01', 'c01', 10, 1, 9, 3, 1, 2, now() - interval '1 minute',"
                "  now() + interval '1 hour', 'http://x/'),"
                " ('10000002', 7, 's01', 'c01', 10, 1, 9, 3, 0, 1, now() - interval '1 minute',"
                "  now() + interval '5 minutes', 'http://x/'),"
                " ('10000003', 7, 's01', 'c01', 10, 1, 9, 3, 1, 1, now() - interval '1 day',"
                "  now() - interval '23 hours', 'http://x/');"
                " UPDATE group_buy_order SET status = 2 WHERE team_id = '10000003';"
                " INSERT INTO group_buy_order_list (user_id, team_id, activity_id, start_time,"
                " end_time, goods_id, source, channel, original_price, deduction_price,"
                " pay_price, status, out_trade_no, biz_id, create_time) VALUES"
                " ('u1', '10000001', 7, now(), now(), 'g', 's01', 'c01', 10, 1, 9, 1, 'paid',"
                "  '7_u1_1', now() - interval '1 minute'),"
                " ('u2', '10000001', 7, now(), now(), 'g', 's01', 'c01', 10, 1, 9, 0, 'wait',"
                "  '7_u2_1', now() - interval '1 minute'),"
                " ('u3', '10000002', 7, now(), now(), 'g', 's01', 'c01', 10, 1, 9, 0, 'short',"
                "  '7_u3_1', now() - interval '1 minute'),"
                " ('u4', '10000003', 7, now(), now(), 'g', 's01', 'c01', 10, 1, 9, 1, 'stranded',"
                "  '7_u4_1', now() - interval '1 day')"
            )
            assert (await migrate(url))[0] == "006_lifecycle.sql"
            rows = await conn.fetch(
                "SELECT o.out_trade_no, extract(epoch FROM o.pay_deadline - o.create_time)"
                "::int AS after_lock, o.pay_deadline = t.valid_end_time AS at_window_end"
                " FROM group_buy_order_list o JOIN group_buy_order t USING (team_id)"
                " ORDER BY o.id"
            )
            assert [tuple(r) for r in rows] == [
                ("paid", None, None), ("wait", 900, False), ("short", 360, True),
                ("stranded", None, None),
            ]  # fmt: skip
            # The team that failed before team.failed existed is announced once, with the
            # payment that was stranded in it.
            pool = await create_pool(url, 1, 2)
            try:
                for _ in range(2):
                    assert await expiry.fail_expired_teams(pool) == 0
            finally:
                await pool.close()
            events = await conn.fetch(
                "SELECT team_id, parameter_json FROM event WHERE event_type = 'team.failed'"
            )
            assert [(e["team_id"], json.loads(e["parameter_json"])["data"]["outTradeNoList"])
                    for e in events] == [("10000003", ["stranded"])]  # fmt: skip
            assert await conn.fetchval("SELECT count(*) FROM team_failed_unannounced") == 0
            assert (
                await conn.fetchval(
                    "SELECT pay_timeout_seconds FROM group_buy_activity WHERE activity_id = 7"
                )
                == 900
            )
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_the_worker_closes_unpaid_orders_past_their_timeout(
    api: Api, pool: asyncpg.Pool, settings: Settings
) -> None:
    act = await api.new_activity(target=3)
    team_id, due = await _locked(api, act)
    _, waiting = await _locked(api, act, team_id)
    await pool.execute(
        "UPDATE group_buy_order_list SET pay_deadline = now() - interval '1 second'"
        " WHERE out_trade_no = $1",
        due,
    )
    worker = build_worker(settings, burst=True, queue_name=f"test:{uuid.uuid4().hex}")
    try:
        await worker.main()
    finally:
        await worker.close()
    statuses = await pool.fetch(
        "SELECT out_trade_no, status FROM group_buy_order_list WHERE team_id = $1", team_id
    )
    assert {r["out_trade_no"]: r["status"] for r in statuses} == {due: 2, waiting: 0}
    assert (await api.team(team_id))["lockCount"] == 1
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM notify_task WHERE team_id = $1 AND event_type = 'order.closed'",
            team_id,
        )
        == 1
    )
