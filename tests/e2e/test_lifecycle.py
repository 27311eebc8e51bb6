"""The lifecycle over HTTP: refunds, unpaid timeout, team failure, late payments."""

import json
from typing import Any

import asyncpg
import pytest

from groupbuy_async.callbacks import events as events_module
from groupbuy_async.callbacks.events import EventType
from groupbuy_async.trade import expiry
from groupbuy_async.trade.rules import order_event

from ..conftest import Api, new_id
from .lifecycle_checks import (
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


def _refund_data(env: dict[str, Any]) -> tuple[str, int, int]:
    data = env["data"]
    return data["refundType"], data["tradeOrderStatus"], data["teamStatus"]


async def _join_and_pay(api: Api, act: dict[str, Any], team_id: str, count: int) -> list[str]:
    outs = []
    for _ in range(count):
        user = new_id("n")
        status, env, out = await lock(api, act, user, team_id)
        assert status == 200, env
        status, env = await settle(api, act, user, out)
        assert status == 200, env
        outs.append(out)
    return outs


async def test_cancelling_a_lock_closes_it_frees_the_slot_and_gives_the_take_back(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=2, paid=0, target=2)
    user, out = team.members[1]
    status, env = await refund(api, act, user, out)
    assert status == 200, env
    assert env["data"] == {
        "userId": user, "orderId": env["data"]["orderId"], "teamId": team.team_id,
        "outTradeNo": out, "refundType": "unpaid", "tradeOrderStatus": 2, "teamStatus": 0,
    }  # fmt: skip
    view = await api.team(team.team_id)
    assert (view["lockCount"], view["completeCount"], view["status"]) == (1, 0, 0)
    # The slot is free for anyone, the take is the user's again (takeLimitCount 1).
    status, env, _ = await lock(api, act, "newcomer", team.team_id)
    assert status == 200, env
    status, env, _ = await lock(api, act, user)
    assert status == 200, env
    # The closed order is never reopened: its outTradeNo answers it as it is.
    status, env = await api.lock(**act, userId=user, outTradeNo=out)
    assert status == 200 and env["data"]["tradeOrderStatus"] == 2, env
    (closed,) = [e for e in await events(pool, team.team_id) if e["type"] == "order.closed"]
    assert closed["data"] == {
        "orderId": closed["orderId"], "outTradeNo": out, "userId": user, "teamId": team.team_id,
        "activityId": act["activityId"], "eventId": closed["data"]["eventId"],
    }  # fmt: skip
    await assert_consistent(pool, [team.team_id])


async def test_refunding_a_paid_member_of_a_forming_team_gives_its_slot_and_count_back(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=2, paid=2, target=3)
    user, out = team.members[0]
    status, env = await refund(api, act, user, out)
    assert status == 200 and _refund_data(env) == ("paid", 3, 0), env
    view = await api.team(team.team_id)
    assert (view["lockCount"], view["completeCount"]) == (1, 1)
    # Two newcomers fill the team; it completes without the refunded member.
    await _join_and_pay(api, act, team.team_id, 2)
    view = await api.team(team.team_id)
    assert (view["status"], view["completeCount"], view["lockCount"]) == (1, 3, 3)
    sent = await events(pool, team.team_id)
    (refunded,) = [e for e in sent if e["type"] == "order.refunded"]
    assert refunded["data"]["refundType"] == "paid" and refunded["data"]["outTradeNo"] == out
    (completed,) = [e for e in sent if e["type"] == "team.completed"]
    assert out not in completed["data"]["outTradeNoList"]
    await assert_consistent(pool, [team.team_id])


async def test_refunds_from_a_complete_team_keep_its_counts_and_mark_it_3(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=2, paid=2, target=2)
    assert (await api.team(team.team_id))["status"] == 1
    for i, (user, out) in enumerate(team.members):
        status, env = await refund(api, act, user, out)
        assert status == 200 and _refund_data(env) == ("paid_team", 3, 3), (i, env)
        view = await api.team(team.team_id)
        assert (view["status"], view["lockCount"], view["completeCount"]) == (3, 2, 2)
    # A complete team (3 too) takes nobody: its slots were never freed.
    status, env, _ = await lock(api, act, "late", team.team_id)
    assert (status, env["code"]) == (409, "E0006"), env
    await assert_consistent(pool, [team.team_id])


async def test_a_repeated_refund_answers_the_same_and_changes_nothing(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=3, paid=1, target=3)
    for user, out in team.members[:2]:  # one paid, one locked
        first = await refund(api, act, user, out)
        assert first[0] == 200, first
        rows = "SELECT * FROM group_buy_order_list WHERE team_id = $1 ORDER BY id"
        before = [dict(r) for r in await pool.fetch(rows, team.team_id)]
        team_before = await api.team(team.team_id)
        sent = len(await events(pool, team.team_id))
        for _ in range(2):
            assert await refund(api, act, user, out) == first
        assert [dict(r) for r in await pool.fetch(rows, team.team_id)] == before
        assert await api.team(team.team_id) == team_before
        assert len(await events(pool, team.team_id)) == sent
    await assert_consistent(pool, [team.team_id])


async def test_refunding_an_unknown_order_is_e0104(api: Api) -> None:
    act, team = await new_team(api, locked=1, paid=1)
    user, out = team.members[0]
    for who, what in (("someone-else", out), (user, "no-such-order")):
        status, env = await refund(api, act, who, what)
        assert (status, env["code"], env["data"]) == (404, "E0104", None), env
    status, env = await api.refund(source="s99", channel="c01", userId=user, outTradeNo=out)
    assert (status, env["code"]) == (404, "E0104"), env  # another pair of the merchant
    status, env = await api.refund(source="s09", channel="c01", userId=user, outTradeNo=out)
    assert (status, env["code"]) == (403, "0403"), env  # a pair it does not hold


async def test_refund_input_is_validated(api: Api) -> None:
    status, env = await api.refund(userId="u1", source="s01", channel="c01")
    assert (status, env["code"]) == (400, "0002"), env


async def test_an_unpaid_lock_past_its_timeout_is_closed_by_the_cron(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=3, paid=1, target=3, takeLimitCount=1)
    late_user, late_out = team.members[2]
    await make_due(pool, late_out)
    assert await expiry.close_unpaid_orders(pool) >= 1
    view = await api.team(team.team_id)
    assert (view["status"], view["lockCount"], view["completeCount"]) == (0, 2, 1)
    # Its order.closed, made by the close's statement, is byte for byte what Python makes,
    # with a delivery to the merchant's endpoint.
    closed = await pool.fetchrow(
        "SELECT e.event_id, e.parameter_json, count(d.id) AS deliveries FROM event e"
        " JOIN group_buy_order_list o ON o.order_id = e.order_id"
        " LEFT JOIN notify_task d ON d.event_id = e.event_id"
        " WHERE o.out_trade_no = $1 AND e.event_type = 'order.closed' GROUP BY e.id",
        late_out,
    )
    order = await pool.fetchrow(
        "SELECT * FROM group_buy_order_list WHERE out_trade_no = $1", late_out
    )
    assert closed is not None and order is not None and closed["deliveries"] == 1
    stamp = json.loads(closed["parameter_json"])["timestamp"]
    data = order_event(EventType.ORDER_CLOSED, order, "").data
    expected = events_module.body("order.closed", str(closed["event_id"]), stamp, data)
    assert closed["parameter_json"] == expected
    assert closed["event_id"].version == 7  # time-ordered, as every event id
    # The late payment is refused with its own code; the event is not written twice.
    status, env = await settle(api, act, late_user, late_out)
    assert (status, env["code"], env["data"]) == (409, "E0112", None), env
    assert env["info"] == "order closed; refund the payment"
    # Refunding it answers unpaid: no money was taken.
    status, env = await refund(api, act, late_user, late_out)
    assert status == 200 and _refund_data(env) == ("unpaid", 2, 0), env
    # Its take is back: the user may lock again.
    status, env, _ = await lock(api, act, late_user)
    assert status == 200, env
    await assert_consistent(pool, [team.team_id])


@pytest.mark.parametrize(("pay_timeout", "at_window_end"), [(120, False), (3600, True)])
async def test_pay_deadline_is_the_activitys_timeout_never_past_the_window(
    api: Api, pool: asyncpg.Pool, pay_timeout: int, at_window_end: bool
) -> None:
    act = await api.new_activity(payTimeoutSeconds=pay_timeout, validTime=15)  # window: 15 min
    status, env, out = await lock(api, act, "u1")
    assert status == 200, env
    row = await pool.fetchrow(
        "SELECT extract(epoch FROM o.pay_deadline - o.create_time)::int AS after_lock,"
        " o.pay_deadline = t.valid_end_time AS at_window_end"
        " FROM group_buy_order_list o JOIN group_buy_order t USING (team_id)"
        " WHERE o.out_trade_no = $1",
        out,
    )
    assert row is not None and row["at_window_end"] == at_window_end
    assert at_window_end or row["after_lock"] == pay_timeout


async def test_pay_timeout_is_part_of_the_activity(api: Api) -> None:
    act = await api.new_activity()
    path = f"/api/v1/admin/activities/{act['activityId']}"
    status, env = await api.call("GET", path, admin=True)
    assert status == 200 and env["data"]["payTimeoutSeconds"] == 900, env
    body = {
        k: v for k, v in env["data"].items() if k not in ("createTime", "updateTime", "activityId")
    }
    for bad in (0, -5, "60", 1.5):
        status, env = await api.call("PUT", path, {**body, "payTimeoutSeconds": bad}, admin=True)
        assert (status, env["code"]) == (400, "0002"), (bad, env)
    status, env = await api.call("PUT", path, {**body, "payTimeoutSeconds": 1}, admin=True)
    assert status == 200 and env["data"]["payTimeoutSeconds"] == 1, env


async def test_a_failed_team_tells_the_merchant_which_payments_to_refund(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=3, paid=2, target=3)
    await end_window(pool, team.team_id)
    await sweep(pool)
    view = await api.team(team.team_id)
    # A failed team counts its payments; its unpaid lock is closed.
    assert (view["status"], view["lockCount"], view["completeCount"]) == (2, 2, 2)
    sent = await events(pool, team.team_id)
    (failed,) = [e for e in sent if e["type"] == "team.failed"]
    assert failed["data"] == {
        "teamId": team.team_id, "activityId": act["activityId"],
        "outTradeNoList": [out for _, out in team.members[:2]],
        "eventId": failed["data"]["eventId"],
    }  # fmt: skip
    (closed,) = [e for e in sent if e["type"] == "order.closed"]
    assert closed["data"]["outTradeNo"] == team.members[2][1]
    # Recording the refund of a listed payment: failed_team, counts unchanged, no event.
    user, out = team.members[0]
    status, env = await refund(api, act, user, out)
    assert status == 200 and _refund_data(env) == ("failed_team", 3, 2), env
    view = await api.team(team.team_id)
    assert (view["lockCount"], view["completeCount"]) == (2, 2)
    assert await events(pool, team.team_id) == sent
    await assert_consistent(pool, [team.team_id], swept=True)


async def test_a_payment_for_a_failed_team_closes_the_order_and_is_refused(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=2, paid=1, target=2)
    await end_window(pool, team.team_id)
    assert await expiry.fail_expired_teams(pool) >= 1  # the team fails; the lock is not closed
    user, out = team.members[1]
    status, env = await settle(api, act, user, out)
    assert (status, env["code"], env["data"]) == (409, "E0113", None), env
    assert env["info"] == "team failed; refund the payment"
    # The refusal committed its close and its event; paying again is "order closed".
    assert (
        await pool.fetchval("SELECT status FROM group_buy_order_list WHERE out_trade_no = $1", out)
        == 2
    )
    await refused(settle(api, act, user, out), "E0112")
    await assert_consistent(pool, [team.team_id], swept=True)


async def test_a_payment_after_a_refund_is_refused(api: Api, pool: asyncpg.Pool) -> None:
    act, team = await new_team(api, locked=1, paid=1, target=3)
    user, out = team.members[0]
    assert (await refund(api, act, user, out))[0] == 200
    await refused(settle(api, act, user, out), "E0114")
    await assert_consistent(pool, [team.team_id])


async def test_a_window_ended_but_not_yet_failed_refuses_payment_and_closes_the_order(
    api: Api, pool: asyncpg.Pool
) -> None:
    act, team = await new_team(api, locked=2, paid=0, target=2)
    await end_window(pool, team.team_id)
    user, out = team.members[0]
    # As if the close cron had come first: the deadline never passes the window's end.
    await refused(settle(api, act, user, out), "E0112")
    assert (await api.team(team.team_id))["lockCount"] == 1
    await sweep(pool)
    await assert_consistent(pool, [team.team_id], swept=True)


async def test_take_limit_counts_live_orders_and_reuses_a_freed_key(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(takeLimitCount=2, target=5)
    outs = []
    for _ in range(2):
        status, env, out = await lock(api, act, "taker")
        assert status == 200, env
        outs.append(out)
    status, env, _ = await lock(api, act, "taker")
    assert (status, env["code"]) == (409, "E0103"), env
    # Key 1 is freed while key 2 stays in use: the next lock takes key 1.
    assert (await refund(api, act, "taker", outs[0]))[0] == 200
    status, env, third = await lock(api, act, "taker")
    assert status == 200, env
    keys = await pool.fetch(
        "SELECT out_trade_no, biz_id FROM group_buy_order_list"
        " WHERE activity_id = $1 AND user_id = 'taker' ORDER BY id",
        act["activityId"],
    )
    suffixes = {r["out_trade_no"]: r["biz_id"] and r["biz_id"].rsplit("_", 1)[1] for r in keys}
    assert suffixes == {outs[0]: None, outs[1]: "2", third: "1"}
    status, env, _ = await lock(api, act, "taker")
    assert (status, env["code"]) == (409, "E0103"), env


async def test_the_users_team_is_one_with_a_live_order(api: Api) -> None:
    act = await api.new_activity(target=3)
    other = await team_of(api, act, locked=1, paid=0)  # ends first
    mine = await team_of(api, act, locked=1, paid=0, tag="me")
    _, env = await api.market_config("me-u0", act)
    # The user's own team first, then the others by window end.
    assert [t["teamId"] for t in env["data"]["teamList"]] == [mine.team_id, other.team_id]
    assert (await refund(api, act, *mine.members[0]))[0] == 200
    _, env = await api.market_config("me-u0", act)
    # Cancelled: nobody is in it any more, so it is not offered.
    assert [t["teamId"] for t in env["data"]["teamList"]] == [other.team_id]
