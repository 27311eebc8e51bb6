"""Money paths: each paid order gets exactly one "give the money back" fact, a payment after
its deadline is refused whether or not the worker runs, and a failed team's counts do not
depend on which cron ran first. Real HTTP requests, real concurrent crons."""

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from groupbuy_async.settings import Settings
from groupbuy_async.trade import expiry
from groupbuy_async.worker.arq_worker import build_worker

from ..conftest import Api
from .lifecycle_checks import (
    Team,
    assert_consistent,
    end_window,
    events,
    lock,
    make_due,
    new_team,
    refund,
    refused,
    settle,
    sweep,
    team_of,
)

RACED_TEAMS = 30


async def _money_facts(pool: asyncpg.Pool, team: Team) -> dict[str, int]:
    """outTradeNo -> how many times the merchant was told to give its money back."""
    facts: dict[str, int] = {}
    for e in await events(pool, team.team_id):
        if e["type"] == "team.failed":
            listed = e["data"]["outTradeNoList"]
        elif e["type"] == "order.refunded":
            listed = [e["data"]["outTradeNo"]]
        else:
            continue
        for out in listed:
            facts[out] = facts.get(out, 0) + 1
    return facts


async def _crons_for(seconds: float, pool: asyncpg.Pool) -> None:
    """Both lifecycle crons back to back, as worker ticks on two workers would run them."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.gather(expiry.fail_expired_teams(pool), expiry.close_unpaid_orders(pool))
        await asyncio.sleep(random.uniform(0, 0.004))


async def test_refunds_racing_team_failure_announce_each_payment_once(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(target=3)
    teams = list(
        await asyncio.gather(*(team_of(api, act, locked=2, paid=1) for _ in range(RACED_TEAMS)))
    )
    window = 0.4
    end = datetime.now(UTC) + timedelta(seconds=window)
    ids = [t.team_id for t in teams]
    await pool.execute(
        "UPDATE group_buy_order SET valid_end_time = $2 WHERE team_id = ANY($1::text[])", ids, end
    )
    await pool.execute(
        "UPDATE group_buy_order_list SET pay_deadline = $2"
        " WHERE team_id = ANY($1::text[]) AND status = 0",
        ids,
        end,
    )

    async def refund_around_the_end(team: Team) -> tuple[int, Any]:
        await asyncio.sleep(random.uniform(window - 0.15, window + 0.15))
        return await refund(api, act, *team.members[0])

    answers, _ = await asyncio.gather(
        asyncio.gather(*(refund_around_the_end(t) for t in teams)), _crons_for(window + 0.4, pool)
    )
    await sweep(pool)
    kinds = set()
    for team, (status, env) in zip(teams, answers, strict=True):
        assert status == 200, env
        kinds.add(env["data"]["refundType"])
        paid_out = team.members[0][1]
        assert await _money_facts(pool, team) == {paid_out: 1}, (
            env,
            await events(pool, team.team_id),
        )
        view = await api.team(team.team_id)
        assert view["status"] == 2, view
        if env["data"]["refundType"] == "failed_team":  # listed in team.failed, counted there
            assert (view["lockCount"], view["completeCount"]) == (1, 1), view
        else:  # refunded while forming: the team failed with no payment
            assert env["data"]["refundType"] == "paid", env
            assert (view["lockCount"], view["completeCount"]) == (0, 0), view
    assert kinds <= {"paid", "failed_team"}, kinds
    await assert_consistent(pool, ids, swept=True)


async def test_refund_after_team_failed_writes_no_second_money_event(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=2, paid=1, target=3)
    await end_window(pool, team.team_id)
    await sweep(pool)
    answers = [await refund(api, act, *team.members[0]) for _ in range(3)]
    for status, env in answers:
        assert status == 200, env
        data = env["data"]
        assert (data["refundType"], data["tradeOrderStatus"], data["teamStatus"]) == (
            "failed_team", 3, 2,
        ), env  # fmt: skip
    assert len({str(env) for _, env in answers}) == 1, answers
    sent = await events(pool, team.team_id)
    assert [e["type"] for e in sent].count("order.refunded") == 0, sent
    assert await _money_facts(pool, team) == {team.members[0][1]: 1}
    await assert_consistent(pool, [team.team_id], swept=True)


async def test_a_settlement_retried_after_the_refund_asks_for_nothing(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=2, paid=1, target=3)
    status, env = await refund(api, act, *team.members[0])
    assert (status, env["data"]["refundType"]) == (200, "paid"), env
    before = await events(pool, team.team_id)
    for _ in range(2):
        env = await refused(settle(api, act, *team.members[0]), "E0114")
        assert "refund" in env["info"] and "nothing" in env["info"], env
    assert await events(pool, team.team_id) == before
    assert await pool.fetchval(
        "SELECT status FROM group_buy_order_list WHERE out_trade_no = $1", team.members[0][1]
    ) == 3  # fmt: skip
    await assert_consistent(pool, [team.team_id])


async def _run_worker_once(settings: Settings) -> None:
    worker = build_worker(settings, burst=True, queue_name=f"test:{uuid.uuid4().hex}")
    try:
        await worker.main()
    finally:
        await worker.close()


async def test_a_settlement_after_the_deadline_is_refused_without_the_worker(
    api: Api, pool: asyncpg.Pool, settings: Settings
) -> None:
    act, team = await new_team(api, locked=2, paid=1, target=3)
    late = team.members[1]
    await make_due(pool, late[1])  # no worker runs: nothing closed it
    for _ in range(2):  # the refusal, then its retry: the same answer, one order.closed
        await refused(settle(api, act, *late), "E0112")
    order = await pool.fetchrow(
        "SELECT status, biz_id FROM group_buy_order_list WHERE out_trade_no = $1", late[1]
    )
    assert order is not None and (order["status"], order["biz_id"]) == (2, None)
    view = await api.team(team.team_id)
    assert (view["status"], view["lockCount"], view["completeCount"]) == (0, 1, 1), view
    closed = [e for e in await events(pool, team.team_id) if e["type"] == "order.closed"]
    assert [e["data"]["outTradeNo"] for e in closed] == [late[1]], closed
    before = await events(pool, team.team_id)
    await _run_worker_once(settings)
    assert await events(pool, team.team_id) == before
    await assert_consistent(pool, [team.team_id])


async def test_the_deadline_is_judged_when_the_payment_is_recorded(
    api: Api, pool: asyncpg.Pool
) -> None:
    """A settlement whose transaction began before the deadline, then waited for the order's
    row past it, is late: judged by the clock when it updates, not when it began."""
    act, team = await new_team(api, locked=2, paid=0, target=3)
    user, out = team.members[0]
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    await pool.execute(
        "UPDATE group_buy_order_list SET pay_deadline = $2 WHERE out_trade_no = $1", out, deadline
    )
    async with pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "SELECT 1 FROM group_buy_order_list WHERE out_trade_no = $1 FOR UPDATE", out
        )
        paid_at = datetime.now(UTC).isoformat()
        settling = asyncio.ensure_future(
            api.settle(source=act["source"], channel=act["channel"], userId=user,
                       outTradeNo=out, outTradeTime=paid_at)
        )  # fmt: skip
        await asyncio.sleep(1.3)
        assert not settling.done()
        await tx.rollback()
    status, env = await settling
    assert (status, env["code"]) == (409, "E0112"), env
    await assert_consistent(pool, [team.team_id])


async def test_a_failed_teams_counts_do_not_depend_on_which_cron_ran_first(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(target=4)
    results = []
    for crons in (
        (expiry.fail_expired_teams, expiry.close_unpaid_orders),
        (expiry.close_unpaid_orders, expiry.fail_expired_teams),
    ):
        team = await team_of(api, act, locked=3, paid=1)
        await end_window(pool, team.team_id)
        for cron in crons:
            await cron(pool)
        results.append(await api.team(team.team_id))
        await assert_consistent(pool, [team.team_id], swept=True)
    counts = [(v["status"], v["lockCount"], v["completeCount"]) for v in results]
    assert counts == [(2, 1, 1), (2, 1, 1)], counts


async def test_a_team_nobody_is_in_is_not_offered(api: Api) -> None:
    act = await api.new_activity(target=3)
    status, env, out = await lock(api, act, "opener")
    assert status == 200, env
    empty = env["data"]["teamId"]
    status, env = await refund(api, act, "opener", out)
    assert (status, env["data"]["refundType"]) == (200, "unpaid"), env
    status, env, _ = await lock(api, act, "someone")
    assert status == 200, env
    joinable = env["data"]["teamId"]
    status, env = await api.market_config("shopper", act)
    assert status == 200, env
    offered = env["data"]["teamList"]
    assert [t["teamId"] for t in offered] == [joinable], (empty, offered)
