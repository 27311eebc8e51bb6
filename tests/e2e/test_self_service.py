"""A merchant's self-service with its own key: its endpoints, their ping and recovery, its
deliveries (a page, one with its attempts, resend, retry now); the operator's same routes;
nothing of another merchant visible (404)."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from standardwebhooks import Webhook

from ..conftest import SECRET, Api, merchant_key, new_id, now_iso
from ..merchant import LocalMerchant, answering, start_merchant

OWN = "/api/v1/gbm/endpoints"


async def _shop(api: Api) -> tuple[Api, tuple[str, str]]:
    merchant_id, tag = f"ss-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    pair = (f"s{tag}", f"c{tag}")
    shop = Api(api.client, await merchant_key(api.client, merchant_id, [pair]), merchant_id)
    shop.endpoints.add(Api.DEAD_URL)  # its locks name no notifyUrl: no endpoint made for it
    return shop, pair


async def _completed(shop: Api, pair: tuple[str, str]) -> str:
    """A team of one, paid: its team.completed event; returns the team id."""
    act = await shop.new_activity(target=1, source=pair[0], channel=pair[1])
    act.pop("notifyUrl")
    out = new_id()
    status, env = await shop.lock(**act, userId="u1", outTradeNo=out)
    assert status == 200, env
    where = {"source": pair[0], "channel": pair[1]}
    status, settled = await shop.settle(
        **where, userId="u1", outTradeNo=out, outTradeTime=now_iso()
    )
    assert status == 200, settled
    return str(env["data"]["teamId"])


async def _deliveries(shop: Api, query: str = "") -> dict[str, Any]:
    status, env = await shop.call("GET", f"/api/v1/gbm/deliveries{query}")
    assert status == 200, env
    return env["data"]  # type: ignore[no-any-return]


async def test_a_merchant_manages_its_own_endpoints_and_sees_no_other(api: Api) -> None:
    shop, _ = await _shop(api)
    other, _ = await _shop(api)
    status, env = await shop.call("PUT", f"{OWN}/main", {"url": "https://shop.example/hook"})
    assert status == 200 and env["data"]["secret"].startswith("whsec_"), env
    assert env["data"]["merchantId"] == shop.merchant_id
    status, env = await other.call("PUT", f"{OWN}/theirs", {"url": "https://other.example/"})
    assert status == 200, env
    status, env = await shop.call("GET", OWN)
    assert [e["endpointId"] for e in env["data"]] == ["main"]
    for method in ("GET", "DELETE"):
        status, env = await other.call(method, f"{OWN}/main")
        assert (status, env["code"]) == (404, "0404"), env
    status, env = await other.call("POST", f"{OWN}/main/secret/rotate", {"graceSeconds": 0})
    assert (status, env["code"]) == (404, "0404"), env
    status, env = await shop.call("GET", f"{OWN}/main")
    assert status == 200 and env["data"]["secret"] is None
    # The operator sees it under the merchant, and the merchant's own routes are the same.
    status, env = await api.call(
        "GET", f"/api/v1/admin/merchants/{shop.merchant_id}/endpoints/main", admin=True
    )
    assert status == 200 and env["data"]["url"] == "https://shop.example/hook"
    status, env = await shop.call("DELETE", f"{OWN}/main")
    assert status == 200
    status, env = await shop.call("GET", OWN)
    assert env["data"] == []


async def test_ping_sends_a_signed_ping_and_answers_the_attempt(api: Api) -> None:
    receiver = await start_merchant()
    try:
        shop, _ = await _shop(api)
        await shop.endpoint(receiver.url, shop.merchant_id, disabled=True)
        status, listed = await shop.call("GET", OWN)
        endpoint_id = listed["data"][0]["endpointId"]
        status, env = await shop.call("POST", f"{OWN}/{endpoint_id}/ping")
        assert status == 200, env
        ping = env["data"]
        assert ping["success"] is True and ping["httpStatus"] == 200 and ping["error"] is None
        assert ping["responseBody"] == "success" and ping["durationMs"] >= 0
        (receipt,) = receiver.received
        verified = Webhook(SECRET).verify(
            receipt.body, {k.lower(): v for k, v in receipt.headers.items()}
        )
        assert verified["type"] == "ping" and verified["data"]["eventId"] == ping["eventId"]
        assert receipt.webhook_id == ping["eventId"]
        # Not answered: the attempt says so.
        receiver.answer = answering(503, "busy")
        status, env = await api.call(
            "POST",
            f"/api/v1/admin/merchants/{shop.merchant_id}/endpoints/{endpoint_id}/ping",
            admin=True,
        )
        assert status == 200 and env["data"]["success"] is False, env
        assert (env["data"]["httpStatus"], env["data"]["responseBody"]) == (503, "busy")
    finally:
        await receiver.server.close()
    status, env = await shop.call("POST", f"{OWN}/{endpoint_id}/ping")
    assert status == 200 and env["data"]["httpStatus"] is None and env["data"]["error"], env


async def test_a_merchant_reads_and_resends_its_own_deliveries_only(
    api: Api, pool: asyncpg.Pool, merchant: LocalMerchant
) -> None:
    shop, pair = await _shop(api)
    other, _ = await _shop(api)
    await shop.endpoint(merchant.url, shop.merchant_id)
    teams = [await _completed(shop, pair) for _ in range(3)]
    await merchant.wait_for(3)
    async with asyncio.timeout(10):  # received, and recorded (after the answer)
        while len((await _deliveries(shop, "?status=1"))["items"]) < 3:
            await asyncio.sleep(0.02)
    page = await _deliveries(shop, "?limit=2")
    assert len(page["items"]) == 2 and page["nextCursor"] is not None
    rest = await _deliveries(shop, f"?limit=2&after={page['nextCursor']}")
    mine = page["items"] + rest["items"]
    assert rest["nextCursor"] is None and len(mine) == 3
    ids = [d["deliveryId"] for d in mine]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3  # newest first, no repeat
    assert {d["type"] for d in mine} == {"team.completed"} and {d["status"] for d in mine} == {1}
    assert (await _deliveries(other))["items"] == []
    assert (await _deliveries(shop, "?status=3"))["items"] == []
    delivery = mine[0]
    path = f"/api/v1/gbm/deliveries/{delivery['deliveryId']}"
    status, env = await shop.call("GET", path)
    assert status == 200 and [a["httpStatus"] for a in env["data"]["attempts"]] == [200]
    for method, tail in (("GET", ""), ("POST", "/resend"), ("POST", "/retry-now")):
        status, env = await other.call(method, path + tail)
        assert (status, env["code"]) == (404, "0404"), (tail, env)
    # Delivered: not waiting, so no retry-now; a resend is a new attempt, same webhook-id.
    status, env = await shop.call("POST", f"{path}/retry-now")
    assert (status, env["code"]) == (409, "E0203"), env
    status, env = await shop.call("POST", f"{path}/resend")
    assert status == 200 and env["data"]["status"] == 2, env
    status, env = await api.call("POST", "/api/v1/admin/notify/run", {}, admin=True)
    assert status == 200, env
    status, env = await api.call(
        "GET", f"/api/v1/admin/deliveries/{delivery['deliveryId']}", admin=True
    )
    assert status == 200 and [a["httpStatus"] for a in env["data"]["attempts"]] == [200, 200]
    assert merchant.ids[delivery["eventId"]] == 2  # the same webhook-id twice
    assert {d["eventId"] for d in mine} == {
        str(await pool.fetchval("SELECT event_id FROM event WHERE team_id = $1", t)) for t in teams
    }


async def test_recover_makes_what_failed_since_a_time_due_again(
    api: Api, pool: asyncpg.Pool
) -> None:
    receiver = await start_merchant(answering(410, "gone"))  # 410: error at once
    try:
        shop, pair = await _shop(api)
        endpoint_id = await shop.endpoint(receiver.url, shop.merchant_id)
        before = datetime.now(UTC) - timedelta(seconds=1)
        for _ in range(2):
            await _completed(shop, pair)
        await receiver.wait_for(2)
        await api.call("POST", "/api/v1/admin/notify/run", {}, admin=True)
        failed = await _deliveries(shop, "?status=3")
        assert len(failed["items"]) == 2, failed
        receiver.answer = None  # fixed: answers success
        recover = f"{OWN}/{endpoint_id}/recover"
        later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        status, env = await shop.call("POST", recover, {"since": later})
        assert (status, env["data"]) == (200, {"recovered": 0}), env
        status, env = await shop.call("POST", recover, {"since": before.isoformat()})
        assert (status, env["data"]) == (200, {"recovered": 2}), env
        status, env = await api.call("POST", "/api/v1/admin/notify/run", {}, admin=True)
        assert (await _deliveries(shop, "?status=1"))["items"][0]["attemptCount"] == 2
        assert len((await _deliveries(shop, "?status=1"))["items"]) == 2
        other, _ = await _shop(api)
        status, env = await other.call("POST", recover, {"since": before.isoformat()})
        assert (status, env["code"]) == (404, "0404"), env
    finally:
        await receiver.server.close()


async def test_a_merchant_cannot_aim_a_broker_endpoint_anywhere(api: Api) -> None:
    """Broker endpoints (kind amqp) name an exchange of the operator's broker: only the
    operator sets them up; the merchant's own key is refused, nothing written."""
    shop, _ = await _shop(api)
    body = {"kind": "amqp", "exchange": "", "routingKey": "someone-elses-queue"}
    status, env = await shop.call("PUT", f"{OWN}/broker", body)
    assert (status, env["code"]) == (403, "0403") and "operator" in env["info"], env
    status, env = await shop.call("GET", f"{OWN}/broker")
    assert status == 404, env
    path = f"/api/v1/admin/merchants/{shop.merchant_id}/endpoints/broker"
    status, env = await api.call("PUT", path, body, admin=True)
    assert status == 200 and env["data"]["kind"] == "amqp", env
    # The merchant may not change it into another broker target either.
    status, env = await shop.call("PUT", f"{OWN}/broker", {**body, "routingKey": "other"})
    assert status == 403, env
