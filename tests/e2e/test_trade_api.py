"""Lock, settle, trial and team endpoints end to end over HTTP on real PostgreSQL."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from groupbuy_async.callbacks import outbox

from ..conftest import Api, new_id, now_iso


async def lock(api: Api, act: dict[str, Any], user: str, team: str | None = None, **kw: Any) -> Any:
    body = {**act, "userId": user, "outTradeNo": kw.pop("out_trade_no", new_id()), **kw}
    if team is not None:
        body["teamId"] = team
    return await api.lock(**body)


async def settle(api: Api, act: dict[str, Any], user: str, out_trade_no: str) -> Any:
    return await api.settle(
        source=act["source"], channel=act["channel"], userId=user,
        outTradeNo=out_trade_no, outTradeTime=now_iso(),
    )  # fmt: skip


async def _locked_by_a_and_b(api: Api, act: dict[str, Any]) -> tuple[str, str, str]:
    """A team of two that users a and b locked: its id, their outTradeNos."""
    out_a, out_b = new_id(), new_id()
    _, env = await lock(api, act, "a", out_trade_no=out_a)
    team_id = env["data"]["teamId"]
    await lock(api, act, "b", team=team_id, out_trade_no=out_b)
    return team_id, out_a, out_b


async def test_open_team_prices_order_and_starts_window(api: Api) -> None:
    act = await api.new_activity()
    status, env = await lock(api, act, "u1", out_trade_no="otn-open-1")
    assert status == 200 and env["code"] == "0000", env
    data = env["data"]
    assert (data["originalPrice"], data["deductionPrice"], data["payPrice"]) == (100, 20, 80)
    assert data["tradeOrderStatus"] == 0 and len(data["orderId"]) == 12
    assert len(data["teamId"]) == 8
    team = await api.team(data["teamId"])
    assert (team["lockCount"], team["completeCount"], team["targetCount"]) == (1, 0, 3)
    assert team["status"] == 0
    start = datetime.fromisoformat(team["validStartTime"])
    end = datetime.fromisoformat(team["validEndTime"])
    assert end - start == timedelta(minutes=15)


async def _lock_text(api: Api, act: dict[str, Any]) -> tuple[int, str]:
    """A lock's answer as the bytes say it (how amounts are written)."""
    async with api.client.post(
        "/api/v1/gbm/trade/lock_market_pay_order",
        json={**act, "userId": "u1", "outTradeNo": new_id()},
        headers=api.shop,
    ) as resp:
        return resp.status, await resp.text()


async def test_money_is_written_with_two_decimals(api: Api) -> None:
    act = await api.new_activity(market_plan="ZK", market_expr="0.85", original_price=10.01)
    _, text = await _lock_text(api, act)
    assert '"originalPrice":10.01' in text and '"payPrice":8.51' in text
    assert '"deductionPrice":1.50' in text


async def test_discount_tie_rounds_half_up_in_trial_and_lock(api: Api) -> None:
    # 10.05 x 0.5 = 5.025, a real tie: half-up pays 5.03 where half-even would pay 5.02.
    act = await api.new_activity(market_plan="ZK", market_expr="0.5", original_price=10.05)
    async with api.client.post(
        "/api/v1/gbm/index/query_group_buy_market_config",
        json={"userId": "u1", "source": act["source"], "channel": act["channel"],
              "goodsId": act["goodsId"]},
        headers=api.shop,
    ) as resp:  # fmt: skip
        trial = await resp.text()
    assert resp.status == 200, trial
    assert '"originalPrice":10.05' in trial
    assert '"payPrice":5.03' in trial and '"deductionPrice":5.02' in trial
    status, locked = await _lock_text(api, act)
    assert status == 200, locked
    assert '"payPrice":5.03' in locked and '"deductionPrice":5.02' in locked


async def test_three_members_settle_and_the_last_completes_the_team(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity()
    outs = [new_id() for _ in range(3)]
    _, first = await lock(api, act, "u1", out_trade_no=outs[0])
    team_id = first["data"]["teamId"]
    for i in (1, 2):
        status, env = await lock(api, act, f"u{i + 1}", team=team_id, out_trade_no=outs[i])
        assert status == 200 and env["data"]["teamId"] == team_id
    completed = []
    for i, out in enumerate(outs):
        status, env = await settle(api, act, f"u{i + 1}", out)
        assert status == 200, env
        assert env["data"] == {
            "userId": f"u{i + 1}", "teamId": team_id, "activityId": act["activityId"],
            "outTradeNo": out, "teamCompleted": env["data"]["teamCompleted"],
        }  # fmt: skip
        completed.append(env["data"]["teamCompleted"])
    assert completed == [False, False, True]
    team = await api.team(team_id)
    assert (team["status"], team["completeCount"]) == (1, 3)
    task = await pool.fetchrow(
        "SELECT t.*, e.parameter_json FROM notify_task t JOIN event e USING (event_id)"
        " WHERE t.team_id = $1",
        team_id,
    )
    assert task is not None
    assert task["notify_url"] == act["notifyUrl"] and task["notify_status"] == 0
    payload = json.loads(task["parameter_json"])
    assert payload["type"] == "team.completed"
    data = payload["data"]
    assert data["teamId"] == team_id and data["outTradeNoList"] == outs
    assert data["eventId"] == str(task["event_id"])


async def test_callback_is_written_in_the_settlement_transaction_or_nothing_is(
    api: Api, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    act = await api.new_activity(target=2)
    team_id, out_a, out_b = await _locked_by_a_and_b(api, act)
    status, env = await settle(api, act, "a", out_a)
    assert status == 200 and env["data"]["teamCompleted"] is False, env

    calls: list[str] = []

    async def outbox_down(conn: Any, team_id: str, *args: Any) -> None:
        calls.append(team_id)
        raise RuntimeError("outbox write failed")

    monkeypatch.setattr(outbox, "enqueue_team_completed", outbox_down)
    status, env = await settle(api, act, "b", out_b)
    assert (status, env["code"], env["data"]) == (500, "0001", None), env
    assert calls == [team_id]  # it was the completing settlement that failed
    # Rolled back as one: the order unpaid, the team as it was, no task.
    order_status = "SELECT status FROM group_buy_order_list WHERE out_trade_no = $1"
    assert await pool.fetchval(order_status, out_b) == 0
    assert await pool.fetchval(order_status, out_a) == 1
    team = await api.team(team_id)
    assert (team["status"], team["completeCount"], team["lockCount"]) == (0, 1, 2)
    tasks = "SELECT count(*) FROM notify_task WHERE team_id = $1"
    assert await pool.fetchval(tasks, team_id) == 0

    monkeypatch.undo()  # the outbox is back: the retried settlement completes the team
    status, env = await settle(api, act, "b", out_b)
    assert status == 200 and env["data"]["teamCompleted"] is True, env
    assert await pool.fetchval(order_status, out_b) == 1
    team = await api.team(team_id)
    assert (team["status"], team["completeCount"]) == (1, 2)
    assert await pool.fetchval(tasks, team_id) == 1
    payload = json.loads(
        await pool.fetchval("SELECT parameter_json FROM event WHERE team_id = $1", team_id)
    )
    assert payload["data"]["outTradeNoList"] == [out_a, out_b]


async def test_settling_again_returns_the_same_data_and_changes_nothing(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(target=2)
    team_id, out_a, out_b = await _locked_by_a_and_b(api, act)
    first_a = await settle(api, act, "a", out_a)
    first_b = await settle(api, act, "b", out_b)
    before = await pool.fetchrow("SELECT * FROM group_buy_order WHERE team_id = $1", team_id)
    assert await settle(api, act, "a", out_a) == first_a
    assert await settle(api, act, "b", out_b) == first_b
    after = await pool.fetchrow("SELECT * FROM group_buy_order WHERE team_id = $1", team_id)
    assert before is not None and after is not None
    assert dict(before) == dict(after)
    assert await pool.fetchval("SELECT count(*) FROM notify_task WHERE team_id = $1", team_id) == 1


async def test_lock_replay_returns_the_same_order(api: Api) -> None:
    act = await api.new_activity()
    out = new_id()
    first = await lock(api, act, "u1", out_trade_no=out)
    again = await lock(api, act, "u1", out_trade_no=out)
    assert first == again


async def test_out_trade_no_of_another_user_is_refused(api: Api) -> None:
    act = await api.new_activity()
    out = new_id()
    await lock(api, act, "u1", out_trade_no=out)
    status, env = await lock(api, act, "intruder", out_trade_no=out)
    assert (status, env["code"]) == (409, "E0109")


async def test_take_limit_refuses_a_second_order(api: Api) -> None:
    act = await api.new_activity(takeLimitCount=1)
    assert (await lock(api, act, "u1"))[0] == 200
    status, env = await lock(api, act, "u1")
    assert (status, env["code"]) == (409, "E0103")


async def test_joining_a_full_team_is_refused(api: Api) -> None:
    act = await api.new_activity(target=2)
    _, env = await lock(api, act, "u1")
    team_id = env["data"]["teamId"]
    assert (await lock(api, act, "u2", team=team_id))[0] == 200
    status, env = await lock(api, act, "u3", team=team_id)
    assert (status, env["code"]) == (409, "E0006")


async def test_joining_unknown_or_foreign_team_is_refused(api: Api) -> None:
    act = await api.new_activity()
    other = await api.new_activity()
    status, env = await lock(api, act, "u1", team="99999999999")
    assert (status, env["code"]) == (404, "E0107")
    _, env = await lock(api, other, "u1")
    status, env = await lock(api, act, "u2", team=env["data"]["teamId"])
    assert (status, env["code"]) == (409, "E0110")


async def test_activity_rules_refuse_locks(api: Api) -> None:
    act = await api.new_activity(status=0)
    assert (await lock(api, act, "u1"))[1]["code"] == "E0101"
    past = datetime.now(UTC) - timedelta(days=3)
    act = await api.new_activity(
        startTime=past.isoformat(), endTime=(past + timedelta(days=1)).isoformat()
    )
    status, env = await lock(api, act, "u1")
    assert (status, env["code"]) == (409, "E0102")


async def test_goods_not_in_activity_is_refused(api: Api) -> None:
    act = await api.new_activity()
    other = await api.new_activity()
    status, env = await lock(api, {**act, "goodsId": other["goodsId"]}, "u1")
    assert (status, env["code"]) == (404, "E0002")


async def test_settlement_rules(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity()
    out = new_id()
    await lock(api, act, "u1", out_trade_no=out)
    status, env = await settle(api, act, "someone-else", out)
    assert (status, env["code"]) == (404, "E0104")
    status, env = await api.settle(
        source=act["source"], channel=act["channel"], userId="u1", outTradeNo=out,
        outTradeTime=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    )  # fmt: skip
    assert (status, env["code"]) == (409, "E0106")
    status, env = await api.settle(
        source="s02", channel="c02", userId="u1", outTradeNo=out, outTradeTime=now_iso()
    )
    assert (status, env["code"]) == (409, "E0105")
    order = await pool.fetchrow(
        "SELECT status FROM group_buy_order_list WHERE out_trade_no = $1", out
    )
    assert order is not None and order["status"] == 0


async def test_expired_team_refuses_join_and_settle(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity()
    out = new_id()
    _, env = await lock(api, act, "u1", out_trade_no=out)
    team_id = env["data"]["teamId"]
    await pool.execute(
        "UPDATE group_buy_order SET valid_start_time = now() - interval '20 minutes',"
        " valid_end_time = now() - interval '5 minutes' WHERE team_id = $1",
        team_id,
    )
    status, env = await lock(api, act, "u2", team=team_id)
    assert (status, env["code"]) == (409, "E0108")
    status, env = await api.settle(
        source=act["source"], channel=act["channel"], userId="u1", outTradeNo=out,
        outTradeTime=(datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
    )  # fmt: skip
    # Its payment deadline ended with the window: refused, the order closed (refund it).
    assert (status, env["code"]) == (409, "E0112")


async def test_market_config_lists_trial_and_joinable_teams(api: Api) -> None:
    act = await api.new_activity(target=2)
    _, mine = await lock(api, act, "me")
    _, open_team = await lock(api, act, "other1")
    _, full = await lock(api, act, "other2")
    await lock(api, act, "other3", team=full["data"]["teamId"])
    status, env = await api.market_config("me", act)
    assert status == 200, env
    data = env["data"]
    assert data["activityId"] == act["activityId"]
    assert data["goods"] == {
        "goodsId": act["goodsId"], "originalPrice": 100, "deductionPrice": 20, "payPrice": 80,
    }  # fmt: skip
    team_ids = [t["teamId"] for t in data["teamList"]]
    assert team_ids[0] == mine["data"]["teamId"]
    assert open_team["data"]["teamId"] in team_ids
    assert full["data"]["teamId"] not in team_ids
    assert data["teamList"][0]["validTimeCountdown"][:3] in ("00:", "14:")
    assert data["teamStatistic"] == {
        "allTeamCount": 3, "allTeamCompleteCount": 0, "allTeamUserCount": 4,
    }  # fmt: skip


async def test_market_config_for_unknown_goods(api: Api) -> None:
    unknown = {"source": "s01", "channel": "c01", "goodsId": "nope"}
    status, env = await api.market_config("me", unknown)
    assert (status, env["code"], env["data"]) == (404, "E0002", None)


async def test_unknown_team_is_404(api: Api) -> None:
    status, env = await api.call("GET", "/api/v1/gbm/teams/12345678901")
    assert (status, env["code"]) == (404, "E0107")


async def test_market_config_refuses_a_closed_activity_as_lock_does(api: Api) -> None:
    past = datetime.now(UTC) - timedelta(days=3)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"status": 0}, "E0101"),
        ({"status": 2}, "E0101"),
        ({"startTime": past.isoformat(), "endTime": (past + timedelta(days=1)).isoformat()}, "E0102"),
        ({"startTime": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
          "endTime": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, "E0102"),
    ]  # fmt: skip
    for overrides, code in cases:
        act = await api.new_activity(**overrides)
        trial = await api.market_config("u1", act)
        locked = await lock(api, act, "u1")
        assert trial[0] == locked[0] == 409, (overrides, trial, locked)
        assert trial[1]["code"] == locked[1]["code"] == code, (overrides, trial, locked)
        assert trial[1]["data"] is None
