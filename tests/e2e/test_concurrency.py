"""Races of real concurrent HTTP requests: PostgreSQL must hold every rule."""

import asyncio
from typing import Any

import asyncpg
import pytest

from ..conftest import Api, new_id, now_iso


async def _open_team(api: Api, act: dict[str, Any]) -> str:
    status, env = await api.lock(**act, userId="opener", outTradeNo=new_id())
    assert status == 200, env
    return env["data"]["teamId"]  # type: ignore[no-any-return]


async def test_twenty_concurrent_joins_to_a_team_of_five(api: Api) -> None:
    act = await api.new_activity(target=5)
    team_id = await _open_team(api, act)
    results = await asyncio.gather(
        *(api.lock(**act, userId=f"j{i}", teamId=team_id, outTradeNo=new_id()) for i in range(20))
    )
    codes = sorted(env["code"] for _, env in results)
    assert codes.count("0000") == 4 and codes.count("E0006") == 16, codes
    assert all(status == (200 if env["code"] == "0000" else 409) for status, env in results)
    team = await api.team(team_id)
    assert team["lockCount"] == 5


@pytest.mark.parametrize("joining", [True, False], ids=["joining", "opening"])
async def test_ten_identical_locks_make_one_order(
    api: Api, pool: asyncpg.Pool, joining: bool
) -> None:
    act = await api.new_activity(target=2)
    # Joining the last slot: the losers would see a full team, yet must get the same order.
    team = {"teamId": await _open_team(api, act)} if joining else {}
    out = new_id()
    results = await asyncio.gather(
        *(api.lock(**act, **team, userId="same", outTradeNo=out) for _ in range(10))
    )
    assert all(status == 200 for status, _ in results), results
    assert len({env["data"]["orderId"] for _, env in results}) == 1
    orders = "SELECT count(*) FROM group_buy_order_list WHERE out_trade_no = $1"
    assert await pool.fetchval(orders, out) == 1
    teams = "SELECT count(*) FROM group_buy_order WHERE activity_id = $1"
    assert await pool.fetchval(teams, act["activityId"]) == 1
    if joining:
        assert (await api.team(team["teamId"]))["lockCount"] == 2


async def test_take_limit_holds_under_concurrent_locks(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity(takeLimitCount=3, target=50)
    results = await asyncio.gather(
        *(api.lock(**act, userId="greedy", outTradeNo=new_id()) for _ in range(12))
    )
    codes = [env["code"] for _, env in results]
    assert codes.count("0000") == 3 and codes.count("E0103") == 9, codes
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM group_buy_order_list WHERE activity_id = $1 AND user_id = 'greedy'",
            act["activityId"],
        )
        == 3
    )


async def test_last_members_settling_together_complete_the_team_once(
    api: Api, pool: asyncpg.Pool
) -> None:
    for _ in range(5):  # several rounds: the race must never be lost
        act = await api.new_activity(target=4)
        outs = [new_id() for _ in range(4)]
        _, env = await api.lock(**act, userId="m0", outTradeNo=outs[0])
        team_id = env["data"]["teamId"]
        for i in range(1, 4):
            await api.lock(**act, userId=f"m{i}", teamId=team_id, outTradeNo=outs[i])
        await api.settle(
            source="s01", channel="c01", userId="m0", outTradeNo=outs[0], outTradeTime=now_iso()
        )
        results = await asyncio.gather(
            *(
                api.settle(
                    source="s01",
                    channel="c01",
                    userId=f"m{i}",
                    outTradeNo=outs[i],
                    outTradeTime=now_iso(),
                )
                for i in range(1, 4)
            )
        )
        assert all(status == 200 for status, _ in results), results
        assert sum(env["data"]["teamCompleted"] for _, env in results) == 1
        team = await api.team(team_id)
        assert (team["status"], team["completeCount"]) == (1, 4)
        assert (
            await pool.fetchval("SELECT count(*) FROM notify_task WHERE team_id = $1", team_id) == 1
        )


async def test_concurrent_settles_of_one_order_count_once(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity(target=2)
    out = new_id()
    _, env = await api.lock(**act, userId="u", outTradeNo=out)
    results = await asyncio.gather(
        *(
            api.settle(
                source="s01", channel="c01", userId="u", outTradeNo=out, outTradeTime=now_iso()
            )
            for _ in range(8)
        )
    )
    assert all(status == 200 for status, _ in results)
    assert len({str(env["data"]) for _, env in results}) == 1
    assert (await api.team(env["data"]["teamId"]))["completeCount"] == 1
