"""Shared steps and the invariants every lifecycle test ends with, read from PostgreSQL."""

import json
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import asyncpg

from groupbuy_async.http.event_schemas import WEBHOOKS
from groupbuy_async.trade import expiry

from ..conftest import Api, new_id, now_iso


@dataclass
class Team:
    """A team opened over HTTP: its id, and its members' (user, outTradeNo) in lock order."""

    act: dict[str, Any]
    team_id: str
    members: list[tuple[str, str]]


async def lock(api: Api, act: dict[str, Any], user: str, team_id: str | None = None) -> Any:
    body = {**act, "userId": user, "outTradeNo": new_id()}
    if team_id is not None:
        body["teamId"] = team_id
    status, env = await api.lock(**body)
    return status, env, body["outTradeNo"]


async def settle(api: Api, act: dict[str, Any], user: str, out: str) -> tuple[int, Any]:
    return await api.settle(
        source=act["source"], channel=act["channel"], userId=user, outTradeNo=out,
        outTradeTime=now_iso(),
    )  # fmt: skip


async def refused(answer: Awaitable[tuple[int, Any]], code: str) -> Any:
    """The request (settle, refund) is refused: 409 with this code; its envelope."""
    status, env = await answer
    assert (status, env["code"]) == (409, code), env
    return env


async def refund(api: Api, act: dict[str, Any], user: str, out: str) -> tuple[int, Any]:
    return await api.refund(
        source=act["source"], channel=act["channel"], userId=user, outTradeNo=out
    )


async def new_team(
    api: Api, locked: int, paid: int, **activity: Any
) -> tuple[dict[str, Any], Team]:
    """A new activity (of these settings) and a team of it as team_of() makes one."""
    act = await api.new_activity(**activity)
    return act, await team_of(api, act, locked=locked, paid=paid)


async def team_of(api: Api, act: dict[str, Any], locked: int, paid: int, tag: str = "") -> Team:
    """A team with `locked` members, the first `paid` of them paid."""
    tag = tag or new_id("t")
    members: list[tuple[str, str]] = []
    team_id: str | None = None
    for i in range(locked):
        user = f"{tag}-u{i}"
        status, env, out = await lock(api, act, user, team_id)
        assert status == 200, env
        team_id = env["data"]["teamId"]
        members.append((user, out))
    assert team_id is not None
    for user, out in members[:paid]:
        status, env = await settle(api, act, user, out)
        assert status == 200, env
    return Team(act, team_id, members)


async def make_due(pool: asyncpg.Pool, *out_trade_nos: str) -> None:
    """These locks are past their payment deadline."""
    await pool.execute(
        "UPDATE group_buy_order_list SET pay_deadline = now() - interval '1 second'"
        " WHERE out_trade_no = ANY($1::text[]) AND status = 0",
        list(out_trade_nos),
    )


async def end_window(pool: asyncpg.Pool, team_id: str) -> None:
    """The team's window has ended (as it does: its locks' deadlines end with it)."""
    await pool.execute(
        "UPDATE group_buy_order SET valid_start_time = now() - interval '20 minutes',"
        " valid_end_time = now() - interval '1 second' WHERE team_id = $1;",
        team_id,
    )
    await pool.execute(
        "UPDATE group_buy_order_list SET pay_deadline = now() - interval '1 second'"
        " WHERE team_id = $1 AND status = 0",
        team_id,
    )


async def sweep(pool: asyncpg.Pool) -> None:
    """What the worker's crons do: fail ended teams, close what is due."""
    await expiry.fail_expired_teams(pool)
    await expiry.close_unpaid_orders(pool)


async def events(pool: asyncpg.Pool, team_id: str) -> list[dict[str, Any]]:
    """The team's events in the outbox, oldest first: {type, orderId?, data}. Each body is
    what OpenAPI's webhooks document for its type."""
    rows = await pool.fetch(
        "SELECT event_type, order_id, parameter_json FROM event WHERE team_id = $1 ORDER BY id",
        team_id,
    )
    for r in rows:
        WEBHOOKS[r["event_type"]].model_validate_json(r["parameter_json"])
    return [
        {"type": r["event_type"], "orderId": r["order_id"], **json.loads(r["parameter_json"])}
        for r in rows
    ]


async def assert_consistent(pool: asyncpg.Pool, team_ids: list[str], swept: bool = False) -> None:
    """Counts equal the live orders while forming; one event per state change; nothing paid
    without its team or its event. `swept`: the crons ran, so no failed team has a lock."""
    for team_id in team_ids:
        team = await pool.fetchrow("SELECT * FROM group_buy_order WHERE team_id = $1", team_id)
        assert team is not None
        orders = await pool.fetch(
            "SELECT * FROM group_buy_order_list WHERE team_id = $1 ORDER BY id", team_id
        )
        await _check_team(team, orders, await events(pool, team_id), swept)


async def _check_team(
    team: asyncpg.Record, orders: list[asyncpg.Record], sent: list[dict[str, Any]], swept: bool
) -> None:
    where = f"team {team['team_id']} (status {team['status']})"
    by_status: dict[int, set[str]] = {s: set() for s in range(4)}
    for o in orders:
        by_status[o["status"]].add(o["out_trade_no"])
        # A live order holds its take key; a closed or refunded one gave it back.
        assert (o["biz_id"] is None) == (o["status"] in (2, 3)), (where, dict(o))
    paid, refunded = by_status[1], by_status[3]
    live = by_status[0] | paid
    kinds = Counter(e["type"] for e in sent)
    if team["status"] == 0:
        assert (team["lock_count"], team["complete_count"]) == (len(live), len(paid)), where
    if team["status"] in (1, 3):
        assert team["complete_count"] == team["target_count"] == team["lock_count"], where
        assert not by_status[0], where  # every member of a complete team had paid
        (completed,) = [e for e in sent if e["type"] == "team.completed"]
        listed = set(completed["data"]["outTradeNoList"])
        paid_team = {o["out_trade_no"] for o in orders if o["refund_type"] == "paid_team"}
        assert paid <= listed and paid_team <= listed <= paid | paid_team, (where, listed)
        assert (team["status"] == 3) == bool(paid_team), where
    failed_team = {o["out_trade_no"] for o in orders if o["refund_type"] == "failed_team"}
    money_back = Counter(e["data"]["outTradeNo"] for e in sent if e["type"] == "order.refunded")
    if team["status"] == 2:
        (failed,) = [e for e in sent if e["type"] == "team.failed"]
        listed = set(failed["data"]["outTradeNoList"])
        # The payments when it failed: those still paid, and those refunded after it failed.
        assert listed == paid | failed_team, (where, listed, paid, failed_team)
        assert team["lock_count"] == team["complete_count"] == len(listed), (where, listed)
        assert not (swept and by_status[0]), f"{where}: locks left in a failed team"
        money_back.update(listed)
    else:
        assert not failed_team, where
    # Every refunded order was paid: exactly one "give the money back" fact each.
    assert all(money_back[out] == 1 for out in refunded | paid & set(money_back)), (
        where,
        money_back,
        refunded,
    )
    assert set(money_back) <= paid | refunded, (where, money_back)
    assert kinds["team.completed"] == (team["status"] in (1, 3)), (where, kinds)
    assert kinds["team.failed"] == (team["status"] == 2), (where, kinds)
    for o in orders:
        mine = Counter(e["type"] for e in sent if e["orderId"] == o["order_id"])
        expected = {2: {"order.closed": 1}, 3: {"order.refunded": 1}}.get(o["status"], {})
        if o["refund_type"] == "failed_team":  # team.failed was its refund instruction
            expected = {}
        assert mine == Counter(expected), (where, o["out_trade_no"], o["status"], mine)
        for e in sent:
            if e["orderId"] == o["order_id"]:
                assert e["data"]["outTradeNo"] == o["out_trade_no"], e
                assert e["data"].get("refundType") == (
                    o["refund_type"] if o["status"] == 3 else None
                ), e
