"""Lifecycle races of real concurrent HTTP requests and cron runs: PostgreSQL must hold every
rule. Each ends with the invariants: counts equal the live orders, one event per state change,
nothing paid without its team or its event."""

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from groupbuy_async.trade import expiry

from ..conftest import Api, new_id
from .lifecycle_checks import (
    Team,
    assert_consistent,
    lock,
    make_due,
    refund,
    settle,
    sweep,
    team_of,
)

TEAMS = 8  # raced side by side in each test


async def _teams(api: Api, act: dict[str, Any], locked: int, paid: int) -> list[Team]:
    return list(await asyncio.gather(*(team_of(api, act, locked, paid) for _ in range(TEAMS))))


async def _repeat(seconds: float, job: Any) -> None:
    """Run a cron job back to back for `seconds`, as several worker ticks would."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await job()
        await asyncio.sleep(0.005)


async def test_refund_racing_the_settlement_that_would_complete_the_team(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(target=3)
    teams = await _teams(api, act, locked=3, paid=2)
    results = await asyncio.gather(*(
        asyncio.gather(refund(api, act, *t.members[0]), settle(api, act, *t.members[2]))
        for t in teams
    ))  # fmt: skip
    for team, ((r_status, refunded), (s_status, settled)) in zip(teams, results, strict=True):
        assert r_status == s_status == 200, (refunded, settled)
        view = await api.team(team.team_id)
        if settled["data"]["teamCompleted"]:  # the payment first: refunded from a full team
            assert refunded["data"]["refundType"] == "paid_team", refunded
            assert (view["status"], view["completeCount"], view["lockCount"]) == (3, 3, 3)
        else:  # the refund first: the team is forming again, one slot free
            assert refunded["data"]["refundType"] == "paid", refunded
            assert (view["status"], view["completeCount"], view["lockCount"]) == (0, 2, 2)
    await assert_consistent(pool, [t.team_id for t in teams])


async def test_repeated_refunds_of_one_order_at_once_refund_it_once(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(target=3)
    teams = await _teams(api, act, locked=2, paid=1)
    targets = [m for t in teams for m in t.members]  # one paid, one locked per team
    results = await asyncio.gather(*(refund(api, act, *m) for m in targets for _ in range(6)))
    for i, member in enumerate(targets):
        answers = results[i * 6 : (i + 1) * 6]
        assert all(status == 200 for status, _ in answers), answers
        assert len({str(env["data"]) for _, env in answers}) == 1, (member, answers)
    for team in teams:
        view = await api.team(team.team_id)
        assert (view["lockCount"], view["completeCount"]) == (0, 0)
    await assert_consistent(pool, [t.team_id for t in teams])


async def test_close_racing_a_late_settlement(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity(target=3)
    teams = await _teams(api, act, locked=2, paid=0)
    members = [m for t in teams for m in t.members]
    await make_due(pool, *(out for _, out in members))

    async def settle_later(member: tuple[str, str]) -> tuple[int, Any]:
        await asyncio.sleep(random.uniform(0, 0.02))
        return await settle(api, act, *member)

    closing = [expiry.close_unpaid_orders(pool, batch=3) for _ in range(2)]
    *settled, _, _ = await asyncio.gather(*(settle_later(m) for m in members), *closing)
    for (_, out), (status, env) in zip(members, settled, strict=True):
        order_status = await pool.fetchval(
            "SELECT status FROM group_buy_order_list WHERE out_trade_no = $1", out
        )
        if status == 200:  # paid before the cron reached it: the cron left it alone
            assert order_status == 1, env
        else:
            assert (status, env["code"], order_status) == (409, "E0112", 2), env
    await expiry.close_unpaid_orders(pool)
    await assert_consistent(pool, [t.team_id for t in teams])


async def test_close_racing_refunds(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity(target=3)
    teams = await _teams(api, act, locked=3, paid=1)
    await make_due(pool, *(t.members[i][1] for t in teams for i in (1, 2)))
    # A paid member and a due lock of each team are refunded while two crons close locks.
    refunds = [refund(api, act, *t.members[i]) for t in teams for i in (0, 1)]
    closing = [expiry.close_unpaid_orders(pool, batch=4) for _ in range(2)]
    *answers, _, _ = await asyncio.gather(*refunds, *closing)
    for i, (status, env) in enumerate(answers):
        assert status == 200, env
        expected = ("paid", 3) if i % 2 == 0 else ("unpaid", 2)
        assert (env["data"]["refundType"], env["data"]["tradeOrderStatus"]) == expected, env
    await expiry.close_unpaid_orders(pool)
    for team in teams:
        view = await api.team(team.team_id)
        assert (view["lockCount"], view["completeCount"], view["status"]) == (0, 0, 0)
    await assert_consistent(pool, [t.team_id for t in teams])


async def _joiners(api: Api, act: dict[str, Any], team_id: str, freed: asyncio.Event) -> int:
    """Ten users try to join until 0.3 s after the slot was freed; returns how many got in."""

    async def join(i: int) -> bool:
        user = new_id(f"j{i}")
        while True:
            done = freed.is_set()
            status, env, _ = await lock(api, act, user, team_id)
            if status == 200:
                return True
            assert env["code"] == "E0006", env
            if done:
                await asyncio.sleep(0.3)
                status, env, _ = await lock(api, act, user, team_id)
                assert status == 200 or env["code"] == "E0006", env
                return bool(status == 200)
            await asyncio.sleep(0.002)

    return sum(await asyncio.gather(*(join(i) for i in range(10))))


async def test_a_freed_slot_is_taken_exactly_once(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity(target=3)
    for how in ("cancel", "refund", "close"):
        team = await team_of(api, act, locked=3, paid=1)
        freed = asyncio.Event()

        async def free(team: Team = team, how: str = how, freed: asyncio.Event = freed) -> None:
            await asyncio.sleep(0.02)
            if how == "close":
                await make_due(pool, team.members[2][1])
                assert await expiry.close_unpaid_orders(pool) >= 1
            else:
                member = team.members[2 if how == "cancel" else 0]
                status, env = await refund(api, act, *member)
                assert status == 200, env
            freed.set()

        joined, _ = await asyncio.gather(_joiners(api, act, team.team_id, freed), free())
        assert joined == 1, how
        view = await api.team(team.team_id)
        assert view["lockCount"] == 3, (how, view)
        await assert_consistent(pool, [team.team_id])


async def test_failure_racing_the_last_settlement(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity(target=2)
    teams = await _teams(api, act, locked=2, paid=1)
    end = datetime.now(UTC) + timedelta(milliseconds=300)
    await pool.execute(
        "UPDATE group_buy_order SET valid_end_time = $2 WHERE team_id = ANY($1::text[])",
        [t.team_id for t in teams],
        end,
    )
    await pool.execute(
        "UPDATE group_buy_order_list SET pay_deadline = $2"
        " WHERE team_id = ANY($1::text[]) AND status = 0",
        [t.team_id for t in teams],
        end,
    )

    async def last_payment(team: Team, paid_in_time: bool) -> tuple[int, Any]:
        await asyncio.sleep(random.uniform(0.2, 0.4))
        user, out = team.members[1]
        # Half of the payments were made in time and their notice arrives late.
        paid_at = end - timedelta(milliseconds=50) if paid_in_time else datetime.now(UTC)
        return await api.settle(
            source=act["source"], channel=act["channel"], userId=user, outTradeNo=out,
            outTradeTime=paid_at.isoformat(),
        )  # fmt: skip

    crons = asyncio.gather(
        _repeat(0.6, lambda: expiry.fail_expired_teams(pool)),
        _repeat(0.6, lambda: expiry.close_unpaid_orders(pool)),
    )
    settled = await asyncio.gather(*(last_payment(t, i % 2 == 0) for i, t in enumerate(teams)))
    await crons
    await sweep(pool)
    for team, (status, env) in zip(teams, settled, strict=True):
        view = await api.team(team.team_id)
        if status == 200:
            assert env["data"]["teamCompleted"] and view["status"] == 1, (env, view)
        else:  # too late: the team failed, or its window had ended
            assert env["code"] in ("E0106", "E0108", "E0113", "E0112"), env
            assert view["status"] == 2, (env, view)
    await assert_consistent(pool, [t.team_id for t in teams], swept=True)
