"""Operator and merchant-facing callback endpoints, the worker's compensation cron, the CLI."""

import json
import time
import uuid
from typing import Any

import asyncpg
from standardwebhooks.webhooks import Webhook

from groupbuy_async.settings import Settings
from groupbuy_async.worker.arq_worker import build_worker

from ..conftest import METRICS, SECRET, Api, make_tasks, new_id, now_iso, sample, start_client
from ..merchant import LocalMerchant, answering


async def test_run_list_inspect_and_replay(
    api: Api, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    merchant.answer = answering(410, "gone")
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    status, env = await api.call(
        "POST", "/api/v1/admin/notify/run", {"teamId": team_id}, admin=True
    )
    assert status == 200
    one_error = {"waitCount": 1, "successCount": 0, "retryCount": 0, "errorCount": 1}
    assert env["data"] == {**one_error, "byType": by_type({"team.completed": one_error})}

    status, env = await api.call(
        "GET", f"/api/v1/admin/notify_tasks?status=3&teamId={team_id}", admin=True
    )
    (task,) = env["data"]
    assert task["teamId"] == team_id and task["notifyStatus"] == 3 and task["lastHttpStatus"] == 410
    assert task["nextAttemptAt"] is None  # nothing more is scheduled for a task in error
    assert task["type"] == "team.completed" and task["orderId"] is None
    assert set(task) == {
        "type", "orderId", "teamId", "activityId", "eventId", "notifyUrl", "notifyCount", "notifyStatus",
        "nextAttemptAt", "lastHttpStatus", "lastError", "createTime", "updateTime", "endpointId",
        "merchantId",
    }  # fmt: skip

    status, env = await api.call("GET", f"/api/v1/admin/notify_tasks/{team_id}", admin=True)
    (attempt,) = env["data"]["attempts"]
    assert attempt["attempt"] == 1 and attempt["httpStatus"] == 410 and attempt["durationMs"] >= 0

    merchant.answer = None  # the merchant is fixed: answers success again
    status, env = await api.call("POST", f"/api/v1/admin/notify_tasks/{team_id}/replay", admin=True)
    assert status == 200 and env["data"]["notifyStatus"] == 2 and env["data"]["nextAttemptAt"]
    status, env = await api.call(
        "POST", "/api/v1/admin/notify/run", {"teamId": team_id}, admin=True
    )
    assert env["data"]["successCount"] == 1
    status, env = await api.call("POST", f"/api/v1/admin/notify_tasks/{team_id}/replay", admin=True)
    assert (status, env["code"]) == (409, "E0201") and "status 1" in env["info"]
    _, env = await api.call("GET", f"/api/v1/admin/notify_tasks/{team_id}", admin=True)
    assert [a["httpStatus"] for a in env["data"]["attempts"]] == [410, 200]
    assert len(merchant.ids) == 1  # one event id for every attempt, replay included


async def test_attempts_show_the_merchants_response_body(
    api: Api, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    merchant.answer = answering(500, "busy, try later: 商户繁忙 #7f3a")
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    run = "/api/v1/admin/notify/run"
    await api.call("POST", run, {"teamId": team_id}, admin=True)
    merchant.answer = None
    await pool.execute("UPDATE notify_task SET next_attempt_at = now() WHERE team_id = $1", team_id)
    _, env = await api.call("POST", run, {"teamId": team_id}, admin=True)
    assert env["data"]["successCount"] == 1
    (dead_team,) = await make_tasks(pool, 1, "http://127.0.0.1:9/notify")  # nothing listens
    await api.call("POST", run, {"teamId": dead_team}, admin=True)

    _, env = await api.call("GET", f"/api/v1/admin/notify_tasks/{team_id}", admin=True)
    assert [(a["httpStatus"], a["responseBody"]) for a in env["data"]["attempts"]] == [
        (500, "busy, try later: 商户繁忙 #7f3a"),
        (200, "success"),
    ]
    _, env = await api.call("GET", f"/api/v1/admin/notify_tasks/{dead_team}", admin=True)
    (attempt,) = env["data"]["attempts"]
    assert attempt["httpStatus"] is None and attempt["responseBody"] is None and attempt["error"]


NO_COUNTS = {"waitCount": 0, "successCount": 0, "retryCount": 0, "errorCount": 0}


def by_type(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """byType as run and the CLI answer it: every event type, zeros for those not given."""
    types = ("team.completed", "team.failed", "order.closed", "order.refunded", "endpoint.disabled")
    return {t: counts.get(t, NO_COUNTS) for t in types}


async def test_notify_admin_input_and_auth(api: Api) -> None:
    assert (await api.call("GET", "/api/v1/admin/notify_tasks"))[0] == 401
    status, env = await api.call("GET", "/api/v1/admin/notify_tasks?status=9", admin=True)
    assert (status, env["code"]) == (400, "0002")
    status, env = await api.call("GET", "/api/v1/admin/notify_tasks?limit=abc", admin=True)
    assert status == 400
    status, env = await api.call("GET", "/api/v1/admin/notify_tasks/00000000999", admin=True)
    assert status == 404
    status, env = await api.call(
        "POST", "/api/v1/admin/notify_tasks/00000000999/replay", admin=True
    )
    assert status == 404


async def test_run_notify_body_is_optional(api: Api) -> None:
    bodies: list[dict[str, str] | None] = [None, {}]
    for body in bodies:  # no body at all, and an empty object: teamId is optional
        status, env = await api.call("POST", "/api/v1/admin/notify/run", body, admin=True)
        assert (status, env["code"]) == (200, "0000"), env
        counts = env.pop("data")
        assert set(counts.pop("byType")) == set(by_type({}))
        assert set(counts) == set(NO_COUNTS) and all(v >= 0 for v in counts.values())
    status, env = await api.call(
        "POST", "/api/v1/admin/notify/run", {"teamId": "not-a-team"}, admin=True
    )
    assert (status, env["code"]) == (400, "0002") and "teamId" in env["info"]


async def test_mock_merchant_verifies_signatures_and_dedupes(settings: Settings) -> None:
    client = await start_client(settings)
    try:
        # It verifies with the secrets of the endpoints at its url (as the demo's `mock`).
        await (await Api.for_client(client)).endpoint(
            "http://127.0.0.1:1/api/v1/test/group_buy_notify"
        )
        body = '{"teamId":"12345678","outTradeNoList":["a","b"]}'
        msg_id = f"msg_{uuid.uuid4().hex}"
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": Webhook(SECRET).sign(
                msg_id, __import__("datetime").datetime.now(), body
            ),
        }
        for _ in range(2):
            async with client.post(
                "/api/v1/test/group_buy_notify", data=body, headers=headers
            ) as r:
                assert (r.status, await r.text()) == (200, "success")
        bad = {**headers, "webhook-signature": "v1,Zm9yZ2Vk"}
        async with client.post("/api/v1/test/group_buy_notify", data=body, headers=bad) as r:
            assert r.status == 401
        async with client.get("/api/v1/test/group_buy_notify") as r:
            received = (await r.json())["data"]
        mine = [c for c in received if c["webhookId"] == msg_id]
        assert len(mine) == 1 and mine[0]["signatureVerified"] is True
        assert mine[0]["payload"]["outTradeNoList"] == ["a", "b"]
    finally:
        await client.close()


_JSON_TYPES = {"string": str, "integer": int, "array": list, "object": dict, "boolean": bool}


async def test_openapi_webhook_matches_the_callback_really_sent(
    settings: Settings, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    client = await start_client(settings)
    try:
        async with client.get("/openapi.json") as resp:
            doc = await resp.json()
        api = await Api.for_client(client)
        act = {**await api.new_activity(target=2), "notifyUrl": merchant.url}
        outs = [new_id(), new_id()]
        _, env = await api.lock(**act, userId="w1", outTradeNo=outs[0])
        team_id = env["data"]["teamId"]
        await api.lock(**act, userId="w2", outTradeNo=outs[1], teamId=team_id)
        where = {"source": act["source"], "channel": act["channel"]}
        for user, out in zip(("w1", "w2"), outs, strict=True):
            status, env = await api.settle(
                **where, userId=user, outTradeNo=out, outTradeTime=now_iso()
            )
            assert status == 200, env
        await merchant.wait_for(1)
    finally:
        await client.close()

    assert set(doc["webhooks"]) == {
        "team.completed",
        "team.failed",
        "order.closed",
        "order.refunded",
        "endpoint.disabled",
    }
    webhook = doc["webhooks"]["team.completed"]["post"]
    ref = webhook["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = doc["components"]["schemas"]
    event = schemas[ref.rsplit("/", 1)[1]]
    data_schema = schemas[event["properties"]["data"]["$ref"].rsplit("/", 1)[1]]
    headers, body = merchant.received[0].headers, merchant.received[0].body
    stored = await pool.fetchval("SELECT parameter_json FROM event WHERE team_id = $1", team_id)
    assert body == stored  # what the merchant got is what the settlement wrote
    envelope = json.loads(body)
    assert set(envelope) == set(event["properties"]) == set(event["required"])
    assert envelope["type"] == "team.completed"
    payload = envelope["data"]
    assert set(payload) == set(data_schema["properties"]) == set(data_schema["required"])
    for name, value in payload.items():
        assert isinstance(value, _JSON_TYPES[data_schema["properties"][name]["type"]]), name
    assert payload["outTradeNoList"] == outs and payload["teamId"] == team_id
    assert payload["eventId"] == headers["webhook-id"]
    from groupbuy_async.http.event_schemas import TeamCompletedEvent

    assert TeamCompletedEvent.model_validate_json(body).data.out_trade_no_list == outs
    # Every documented header is sent, and the signature verifies as documented.
    documented = {p["name"] for p in webhook["parameters"] if p["in"] == "header"}
    assert documented == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert documented <= {h.lower() for h in headers}
    Webhook(SECRET).verify(body, {k.lower(): v for k, v in headers.items()})
    assert "success" in json.dumps(webhook["responses"])


async def test_metrics_are_prometheus_text(
    api: Api, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    success = 'groupbuy_notify_attempts_total{outcome="success",type="team.completed"}'
    before = sample(await api.metrics(), success)
    team_id, _waiting = await make_tasks(pool, 2, merchant.url)
    await api.call("POST", "/api/v1/admin/notify/run", {"teamId": team_id}, admin=True)
    text = await api.metrics()
    team_completed = "event_type = 'team.completed'"
    due = await pool.fetchval(
        "SELECT count(*) FROM notify_task WHERE notify_status IN (0, 2)"
        f" AND next_attempt_at <= now() AND {team_completed}"
    )
    assert sample(text, 'groupbuy_notify_due{type="team.completed"}') == due >= 1
    assert sample(text, success) == before + 1
    done = await pool.fetchval(
        f"SELECT count(*) FROM notify_task WHERE notify_status = 1 AND {team_completed}"
    )
    assert sample(text, 'groupbuy_notify_tasks{status="1",type="team.completed"}') == done

    assert "groupbuy_notify_delivery_seconds_bucket" in text
    assert "groupbuy_notify_in_flight 0.0" in text


async def test_worker_cron_delivers_due_callbacks(
    settings: Settings, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    team_ids = await make_tasks(pool, 5, merchant.url)
    worker = build_worker(settings, burst=True, queue_name=f"test:{uuid.uuid4().hex}")
    try:
        await worker.main()
    finally:
        await worker.close()
    assert merchant.requests >= 5
    statuses = await pool.fetch(
        "SELECT notify_status FROM notify_task WHERE team_id = ANY($1::text[])", team_ids
    )
    assert {r["notify_status"] for r in statuses} == {1}


async def test_notify_cli_runs_one_team(
    settings: Settings, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    from groupbuy_async.cli import notify

    team_id, _other = await make_tasks(pool, 2, merchant.url)
    counts = await notify(settings, team_id)
    one = {"waitCount": 1, "successCount": 1, "retryCount": 0, "errorCount": 0}
    assert counts == {**one, "byType": by_type({"team.completed": one})}
    assert [r.webhook_id for r in merchant.received] == [
        str(await pool.fetchval("SELECT event_id FROM notify_task WHERE team_id = $1", team_id))
    ]


async def test_worker_serves_its_own_metrics(
    settings: Settings, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    import socket

    import aiohttp

    from groupbuy_async.worker.context import shutdown, startup
    from groupbuy_async.worker.jobs import deliver_callbacks

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx: dict[str, Any] = {"settings": settings.model_copy(update={"worker_metrics_port": port})}
    await startup(ctx)
    try:
        await make_tasks(pool, 2, merchant.url)
        await deliver_callbacks(ctx)
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer nope"}):  # as the API's: refused
                async with http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as r:
                    assert r.status == 401
            async with http.get(f"http://127.0.0.1:{port}/metrics", headers=METRICS) as r:
                assert r.status == 200
                text = await r.text()
        success = 'groupbuy_notify_attempts_total{outcome="success",type="team.completed"}'
        assert sample(text, success) >= 2
    finally:
        await shutdown(ctx)
