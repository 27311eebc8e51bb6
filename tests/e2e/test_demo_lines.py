"""The curl lines `make run` prints work as printed: run by bash against a real server."""

import asyncio
import json
import shutil
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from groupbuy_async.dev.run import DEMO_ACTIVITY, curl_lines, load_demo

from ..conftest import ADMIN_TOKEN


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_the_demo_lines_lock_pay_complete_and_refund(
    client: TestClient[Any, Any], pool: asyncpg.Pool, database_url: str, shop_key: str
) -> None:
    """(The test merchant holds the demo's s01/c01 here; `dev` makes a demo merchant.)"""
    await load_demo(database_url)
    base = str(client.make_url("")).rstrip("/")
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", curl_lines(base, ADMIN_TOKEN, shop_key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    answers = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    refunded = answers[-4]  # then the mock merchant's list, the endpoints, the notify tasks
    assert refunded["code"] == "0000", refunded
    assert (refunded["data"]["refundType"], refunded["data"]["teamStatus"]) == ("paid_team", 3)
    team = await pool.fetchrow(
        "SELECT status, complete_count FROM group_buy_order WHERE team_id = $1",
        refunded["data"]["teamId"],
    )
    assert team is not None and tuple(team) == (3, 3)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM group_buy_order WHERE activity_id = $1", DEMO_ACTIVITY
        )
        == 1
    )


async def test_the_demo_is_loaded_once_and_what_an_operator_changed_stays(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """`make run` on a data dir with the demo in it leaves the demo as the operator left it."""
    await load_demo(database_url)
    await pool.execute(
        "UPDATE group_buy_activity SET activity_name = 'renamed', take_limit_count = 2"
        " WHERE activity_id = $1",
        DEMO_ACTIVITY,
    )
    try:
        await load_demo(database_url)
        row = await pool.fetchrow(
            "SELECT activity_name, take_limit_count FROM group_buy_activity WHERE activity_id = $1",
            DEMO_ACTIVITY,
        )
        assert row is not None and tuple(row) == ("renamed", 2)
    finally:
        await pool.execute(
            "UPDATE group_buy_activity SET activity_name = 'demo', take_limit_count = 1"
            " WHERE activity_id = $1",
            DEMO_ACTIVITY,
        )
