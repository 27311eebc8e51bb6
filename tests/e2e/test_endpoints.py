"""Merchants' endpoints over HTTP: secrets shown once and sealed at rest, fan-out by type and
pair, the lock's notifyUrl limited to the merchant's endpoints, rotation verified with both
secrets, held deliveries, and a hanging endpoint beside a healthy one on the same host."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ..conftest import SECRET, Api, make_tasks, merchant_key, new_id, now_iso
from ..merchant import LocalMerchant, start_merchant

MERCHANTS = "/api/v1/admin/merchants"


def _tag() -> str:
    return uuid.uuid4().hex[:8]


async def _shop(api: Api, pairs: int = 1) -> tuple[Api, list[tuple[str, str]]]:
    """A new merchant holding `pairs` new pairs, as an Api trading with its key."""
    merchant_id, tag = f"m-{_tag()}", _tag()
    held = [(f"s{tag}{i}", f"c{tag}{i}") for i in range(pairs)]
    key = await merchant_key(api.client, merchant_id, held)
    shop = Api(api.client, key, merchant_id)
    shop.endpoints.add(Api.DEAD_URL)  # its locks name no notifyUrl: no endpoint made for it
    return shop, held


async def _put(
    api: Api, merchant_id: str, endpoint_id: str, **body: Any
) -> tuple[int, dict[str, Any]]:
    path = f"{MERCHANTS}/{merchant_id}/endpoints/{endpoint_id}"
    return await api.call("PUT", path, body, admin=True)


async def _team(shop: Api, pair: tuple[str, str], size: int = 1, **lock: Any) -> str:
    """A completed team of `size` under `pair`; returns its id."""
    act = await shop.new_activity(target=size, source=pair[0], channel=pair[1])
    act.pop("notifyUrl")
    team_id = None
    outs = []
    for i in range(size):
        out = new_id()
        body = {**act, **lock, "userId": f"u{i}", "outTradeNo": out}
        if team_id:
            body["teamId"] = team_id
        status, env = await shop.lock(**body)
        assert status == 200, env
        team_id = env["data"]["teamId"]
        outs.append(out)
    for i, out in enumerate(outs):
        where = {"source": pair[0], "channel": pair[1]}
        status, env = await shop.settle(
            **where, userId=f"u{i}", outTradeNo=out, outTradeTime=now_iso()
        )
        assert status == 200, env
    assert isinstance(team_id, str)
    return team_id


async def _sent(merchant: LocalMerchant, count: int) -> list[str]:
    await merchant.wait_for(count)
    await asyncio.sleep(0.2)  # nothing more comes
    return [r.webhook_id for r in merchant.received]


@pytest.fixture
async def merchants() -> AsyncIterator[list[LocalMerchant]]:
    started = [await start_merchant() for _ in range(3)]
    yield started
    for m in started:
        await m.server.close()


async def test_an_endpoint_shows_its_secret_once_and_keeps_it_sealed(
    api: Api, pool: asyncpg.Pool
) -> None:
    shop, _ = await _shop(api)
    status, env = await _put(api, shop.merchant_id, "main", url="https://shop.example/hook")
    assert status == 200, env
    created = env["data"]
    secret = created["secret"]
    assert secret.startswith("whsec_")
    Webhook(secret)  # a secret the Standard Webhooks library takes
    assert created["eventTypes"] == [] and created["channels"] == []
    status, env = await api.call(
        "GET", f"{MERCHANTS}/{shop.merchant_id}/endpoints/main", admin=True
    )
    assert status == 200 and env["data"]["secret"] is None
    # Replaced: the same secret, never shown again; a secret given now is refused.
    status, env = await _put(
        api, shop.merchant_id, "main", url="https://shop.example/hook2", eventTypes=["team.failed"]
    )
    assert (status, env["data"]["secret"], env["data"]["url"]) == (
        200, None, "https://shop.example/hook2",
    )  # fmt: skip
    status, env = await _put(api, shop.merchant_id, "main", url="https://x.example/", secret=SECRET)
    assert (status, env["code"]) == (400, "0002") and env["info"].startswith("secret:"), env
    # A dump of the database holds neither the secret nor its key.
    row = await pool.fetchrow(
        "SELECT e.*, e::text AS dump FROM endpoint e WHERE merchant_id = $1", shop.merchant_id
    )
    assert row is not None
    body = secret.removeprefix("whsec_")
    assert body not in row["dump"] and body.encode() not in row["secret"]
    assert row["url"] == "https://shop.example/hook2"
    # Given at creation (moving an existing receiver): the answer shows that one.
    status, env = await _put(
        api, shop.merchant_id, "moved", url="https://a.example/", secret=SECRET
    )
    assert (status, env["data"]["secret"]) == (200, SECRET)
    status, env = await api.call("GET", f"{MERCHANTS}/{shop.merchant_id}/endpoints", admin=True)
    assert [e["endpointId"] for e in env["data"]] == ["main", "moved"]
    status, env = await api.call(
        "DELETE", f"{MERCHANTS}/{shop.merchant_id}/endpoints/moved", admin=True
    )
    assert status == 200
    status, env = await api.call(
        "GET", f"{MERCHANTS}/{shop.merchant_id}/endpoints/moved", admin=True
    )
    assert (status, env["code"]) == (404, "0404")


async def test_endpoint_input_is_checked(api: Api) -> None:
    shop, _ = await _shop(api)
    other, (foreign,) = await _shop(api)
    url = "https://shop.example/hook"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": url, "channels": [{"source": foreign[0], "channel": foreign[1]}]}, "channels"),
        ({"url": url, "eventTypes": ["team.exploded"]}, "eventTypes"),
        ({"url": url, "eventTypes": ["team.failed", "team.failed"]}, "eventTypes"),
        ({"url": url, "secret": "whsec_abc"}, "secret"),
        ({"url": "ftp://shop.example/"}, "url"),
    ]
    for body, field in cases:
        status, env = await _put(api, shop.merchant_id, "e1", **body)
        assert (status, env["code"]) == (400, "0002") and field in env["info"], (body, env)
    status, env = await _put(api, "nobody-here", "e1", url=url)
    assert (status, env["code"]) == (404, "0404"), env
    status, env = await api.call("GET", f"{MERCHANTS}/{other.merchant_id}/endpoints", admin=True)
    assert (status, env["data"]) == (200, [])


async def test_a_broker_endpoint_is_an_exchange_and_routing_key_instead_of_a_url(
    api: Api, pool: asyncpg.Pool
) -> None:
    shop, (pair,) = await _shop(api)
    bus = {"kind": "amqp", "exchange": "shop.events", "routingKey": "team.*"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "amqp", "routingKey": "k"}, "exchange: required for kind amqp"),
        ({"kind": "amqp", "exchange": "x"}, "routingKey: required for kind amqp"),
        ({**bus, "url": "https://shop.example/hook"}, "url: not for kind amqp"),
        ({"url": "https://shop.example/hook", "routingKey": "k"}, "routingKey: only for kind amqp"),
        ({"kind": "http", "exchange": "x"}, "url: required for kind http"),
        ({**bus, "exchange": None}, "exchange: must not be null"),
        ({**bus, "exchange": "no spaces"}, "exchange"),
        ({**bus, "routingKey": "k" * 256}, "routingKey"),
        ({"kind": "smtp", "url": "https://shop.example/hook"}, "kind"),
    ]
    for body, info in cases:
        status, env = await _put(api, shop.merchant_id, "bus", **body)
        assert (status, env["code"]) == (400, "0002") and info in env["info"], (body, env)
    status, env = await _put(api, shop.merchant_id, "bus", **bus)
    assert status == 200 and env["data"]["secret"].startswith("whsec_"), env
    shown = {k: env["data"][k] for k in ("kind", "url", "exchange", "routingKey")}
    assert shown == {**bus, "url": None}
    # The default exchange ('') routes by queue name.
    status, env = await _put(
        api, shop.merchant_id, "queue", kind="amqp", exchange="", routingKey="q"
    )
    assert status == 200 and env["data"]["exchange"] == "", env
    status, env = await api.call("GET", f"{MERCHANTS}/{shop.merchant_id}/endpoints/bus", admin=True)
    assert status == 200 and env["data"]["routingKey"] == "team.*" and env["data"]["secret"] is None
    # An HTTP endpoint shows no exchange; one may become the other (its secret stays).
    status, env = await _put(api, shop.merchant_id, "web", url="https://shop.example/hook")
    assert (env["data"]["kind"], env["data"]["exchange"], env["data"]["routingKey"]) == (
        "http", None, None,
    )  # fmt: skip
    sealed = await pool.fetchval(
        "SELECT secret FROM endpoint WHERE merchant_id = $1 AND endpoint_id = 'web'",
        shop.merchant_id,
    )
    status, env = await _put(api, shop.merchant_id, "web", **bus)
    assert status == 200 and env["data"]["url"] is None and env["data"]["secret"] is None, env
    assert sealed == await pool.fetchval(
        "SELECT secret FROM endpoint WHERE merchant_id = $1 AND endpoint_id = 'web'",
        shop.merchant_id,
    )
    # Its own routes show the same; a lock's notifyUrl cannot name it (it has no url).
    status, env = await shop.call("GET", "/api/v1/gbm/endpoints/bus")
    assert status == 200 and env["data"]["kind"] == "amqp", env
    act = await shop.new_activity(target=1, source=pair[0], channel=pair[1])
    body = {**act, "notifyUrl": "", "userId": "u1", "outTradeNo": new_id()}
    status, env = await shop.call("POST", "/api/v1/gbm/trade/lock_market_pay_order", body)
    assert (status, env["code"]) == (400, "0002") and "notifyUrl" in env["info"], env
    # This API has no GROUPBUY_AMQP_URL: a ping says so, and nothing fails harder.
    status, env = await api.call(
        "POST", f"{MERCHANTS}/{shop.merchant_id}/endpoints/bus/ping", None, admin=True
    )
    assert status == 200 and env["data"]["success"] is False, env
    assert "GROUPBUY_AMQP_URL is not set" in env["data"]["error"]
    assert env["data"]["httpStatus"] is None and env["data"]["responseBody"] is None
    # The database holds the rule too.
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE endpoint SET url = 'https://x.example/' WHERE merchant_id = $1"
            " AND endpoint_id = 'bus'",
            shop.merchant_id,
        )


async def test_each_event_goes_to_every_endpoint_that_takes_its_type_and_pair(
    api: Api, pool: asyncpg.Pool, merchants: list[LocalMerchant]
) -> None:
    every, refunds_only, second_shop = merchants
    shop, (first, second) = await _shop(api, pairs=2)
    await shop.endpoint(every.url, shop.merchant_id)
    await shop.endpoint(refunds_only.url, shop.merchant_id, eventTypes=["order.refunded"])
    await shop.endpoint(
        second_shop.url, shop.merchant_id, channels=[{"source": second[0], "channel": second[1]}]
    )
    team_one = await _team(shop, first)
    team_two = await _team(shop, second)
    status, env = await shop.refund(source=first[0], channel=first[1], userId="u0", outTradeNo=(
        await pool.fetchval("SELECT out_trade_no FROM group_buy_order_list WHERE team_id = $1",
                            team_one)
    ))  # fmt: skip
    assert status == 200, env
    status, env = await api.call(
        "POST", "/api/v1/admin/notify/run", {"teamId": team_one}, admin=True
    )
    assert status == 200, env
    events = {
        (r["team_id"], r["event_type"]): str(r["event_id"])
        for r in await pool.fetch(
            "SELECT team_id, event_type, event_id FROM event WHERE team_id = ANY($1::text[])",
            [team_one, team_two],
        )
    }
    assert set(events) == {
        (team_one, "team.completed"), (team_one, "order.refunded"), (team_two, "team.completed"),
    }  # fmt: skip
    assert sorted(await _sent(every, 3)) == sorted(events.values())
    assert await _sent(refunds_only, 1) == [events[team_one, "order.refunded"]]
    assert await _sent(second_shop, 1) == [events[team_two, "team.completed"]]
    for receipt in every.received:  # each signed with its endpoint's secret
        Webhook(SECRET).verify(receipt.body, {k.lower(): v for k, v in receipt.headers.items()})
    deliveries = await pool.fetch(
        "SELECT t.event_id, ep.endpoint_id FROM notify_task t JOIN endpoint ep ON ep.id = t.endpoint"
        " WHERE t.team_id = ANY($1::text[])",
        [team_one, team_two],
    )
    assert len(deliveries) == 5
    status, env = await api.call(
        "GET", f"/api/v1/admin/events/{events[team_one, 'order.refunded']}", admin=True
    )
    assert status == 200 and env["data"]["notifyStatus"] == 1, env
    assert len(env["data"]["deliveries"]) == 2
    assert {d["merchantId"] for d in env["data"]["deliveries"]} == {shop.merchant_id}
    assert all(len(d["attempts"]) == 1 for d in env["data"]["deliveries"])


async def test_a_lock_can_name_only_an_endpoint_of_its_merchant(
    api: Api, pool: asyncpg.Pool, merchants: list[LocalMerchant]
) -> None:
    pinned, unpinned, elsewhere = merchants
    shop, (pair,) = await _shop(api)
    await shop.endpoint(pinned.url, shop.merchant_id)
    await shop.endpoint(unpinned.url, shop.merchant_id)
    other, _ = await _shop(api)
    await other.endpoint(elsewhere.url, other.merchant_id)
    act = await shop.new_activity(target=1, source=pair[0], channel=pair[1])
    for url in (elsewhere.url, "https://attacker.example/collect"):
        body = {**act, "notifyUrl": url, "userId": "u9", "outTradeNo": new_id()}
        status, env = await shop.call("POST", "/api/v1/gbm/trade/lock_market_pay_order", body)
        assert (status, env["code"]) == (400, "0002") and "notifyUrl" in env["info"], env
    assert not await pool.fetchval(
        "SELECT count(*) FROM group_buy_order WHERE activity_id = $1", act["activityId"]
    )
    team_id = await _team(shop, pair, notifyUrl=pinned.url)
    assert len(await _sent(pinned, 1)) == 1
    assert unpinned.requests == 0 and elsewhere.requests == 0
    stored = await pool.fetchval(
        "SELECT notify_url FROM group_buy_order WHERE team_id = $1", team_id
    )
    assert stored == pinned.url


async def test_rotation_signs_with_both_secrets_until_the_grace_ends(
    api: Api, merchants: list[LocalMerchant]
) -> None:
    receiver = merchants[0]
    shop, (pair,) = await _shop(api)
    endpoint_id = await shop.endpoint(receiver.url, shop.merchant_id)
    path = f"{MERCHANTS}/{shop.merchant_id}/endpoints/{endpoint_id}/secret/rotate"
    status, env = await api.call("POST", path, {"graceSeconds": 3600}, admin=True)
    assert status == 200 and env["data"]["previousSecretUntil"] is not None, env
    new = env["data"]["secret"]
    assert new.startswith("whsec_") and new != SECRET
    await _team(shop, pair)
    await receiver.wait_for(1)
    first = receiver.received[0]
    assert len(first.headers["webhook-signature"].split()) == 2
    for secret in (SECRET, new):  # a receiver knowing either one verifies
        Webhook(secret).verify(first.body, {k.lower(): v for k, v in first.headers.items()})
    status, env = await api.call("POST", path, {"graceSeconds": 0}, admin=True)
    assert status == 200 and env["data"]["previousSecretUntil"] is None, env
    newest = env["data"]["secret"]
    await _team(shop, pair)
    await receiver.wait_for(2)
    second = receiver.received[1]
    headers = {k.lower(): v for k, v in second.headers.items()}
    assert len(headers["webhook-signature"].split()) == 1
    Webhook(newest).verify(second.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(second.body, headers)


async def test_a_disabled_endpoint_holds_its_deliveries_until_enabled(
    api: Api, pool: asyncpg.Pool, merchants: list[LocalMerchant]
) -> None:
    receiver = merchants[0]
    (team_id,) = await make_tasks(pool, 1, receiver.url)
    endpoint = await pool.fetchrow(
        "SELECT merchant_id, endpoint_id, url FROM endpoint WHERE id ="
        " (SELECT endpoint FROM notify_task WHERE team_id = $1)",
        team_id,
    )
    assert endpoint is not None
    where = (endpoint["merchant_id"], endpoint["endpoint_id"])
    status, env = await _put(api, *where, url=receiver.url, disabled=True)
    assert status == 200, env
    status_of = "SELECT notify_status FROM notify_task WHERE team_id = $1"
    assert await pool.fetchval(status_of, team_id) == 4
    await api.call("POST", "/api/v1/admin/notify/run", {"teamId": team_id}, admin=True)
    assert receiver.requests == 0
    status, env = await _put(api, *where, url=receiver.url, disabled=False)
    assert status == 200, env
    status, env = await api.call(
        "POST", "/api/v1/admin/notify/run", {"teamId": team_id}, admin=True
    )
    assert env["data"]["successCount"] == 1, env
    assert receiver.requests == 1 and await pool.fetchval(status_of, team_id) == 1
    attempts = await pool.fetchval(
        "SELECT count(*) FROM notify_attempt WHERE task_id ="
        " (SELECT id FROM notify_task WHERE team_id = $1)",
        team_id,
    )
    assert attempts == 1  # being held was no attempt


class _TwoPaths:
    """One server (one host and port): /hang never answers until released, /ok answers."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.ok_times: list[float] = []
        app = web.Application()
        app.router.add_post("/hang", self._hang)
        app.router.add_post("/ok", self._ok)
        self.server = TestServer(app, host="127.0.0.1")

    async def _hang(self, _: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(text="success")

    async def _ok(self, _: web.Request) -> web.Response:
        self.ok_times.append(time.monotonic())
        return web.Response(text="success")

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


async def test_a_hanging_endpoint_does_not_delay_another_on_the_same_host(
    pool: asyncpg.Pool, make_dispatcher: Any
) -> None:
    """Two merchants' endpoints on one hosting platform: same host and port, other paths.
    The hanging one's backlog falls due first and fills its own bounds only."""
    server = _TwoPaths()
    await server.server.start_server()
    drain: asyncio.Task[Any] | None = None
    try:
        await make_tasks(pool, 200, server.url("/hang"))
        healthy = await make_tasks(pool, 20, server.url("/ok"))
        dispatcher = make_dispatcher(notify_timeout_seconds=3.0)
        began = time.monotonic()
        drain = asyncio.create_task(dispatcher.drain(seconds=8))
        async with asyncio.timeout(2.5):  # less than one timeout of the hanging endpoint
            while len(server.ok_times) < len(healthy):
                await asyncio.sleep(0.01)
        assert server.ok_times[-1] - began < 1.5
    finally:
        server.release.set()
        if drain is not None:
            await drain
        await server.server.close()


async def test_a_delivery_fanned_out_as_its_endpoint_was_disabled_is_held_not_sent(
    api: Api, pool: asyncpg.Pool, merchants: list[LocalMerchant]
) -> None:
    """The fan-out read the endpoint enabled while a concurrent PUT disabled it and held its
    open deliveries: the one it wrote is open. The claim holds it instead of sending it."""
    receiver = merchants[0]
    (team_id,) = await make_tasks(pool, 1, receiver.url)
    await pool.execute(
        "UPDATE endpoint SET disabled = true WHERE id ="
        " (SELECT endpoint FROM notify_task WHERE team_id = $1)",
        team_id,
    )
    status, env = await api.call(
        "POST", "/api/v1/admin/notify/run", {"teamId": team_id}, admin=True
    )
    assert status == 200 and env["data"]["waitCount"] == 0, env
    assert receiver.requests == 0
    row = await pool.fetchrow(
        "SELECT notify_status, notify_count, claim_token FROM notify_task WHERE team_id = $1",
        team_id,
    )
    assert row is not None and tuple(row) == (4, 0, None)
