"""Every route's authorization, driven by the route table itself, so that a new route
cannot be added without its case here: no credentials, wrong ones, a revoked key, and
another merchant's key (a pair it does not hold: 403; a team of another merchant: 404)."""

import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from groupbuy_async.http.routing import ROUTE_TABLE, Route

from ..conftest import ADMIN_TOKEN, METRICS, SHOP_MERCHANT, Api, merchant_key, now_iso
from .lifecycle_checks import new_team

PUBLIC = {"/healthz", "/readyz", "/openapi.json"}
MOCK = "/api/v1/test/group_buy_notify"  # dev's mock merchant: a merchant's receiver, open


def _routes(client: TestClient[Any, Any]) -> list[Route]:
    app = client.app
    assert app is not None
    return list(app[ROUTE_TABLE])


def _ids(routes: list[Route]) -> list[str]:
    return [f"{r.method} {r.path}" for r in routes]


@pytest.fixture
async def world(api: Api, pool: asyncpg.Pool) -> dict[str, Any]:
    """A team of the test merchant, an endpoint and a delivery of it, and what each shop
    route is called with: a path, or (path, body)."""
    act, team = await new_team(api, locked=2, paid=1, target=3)
    user, out = team.members[0]
    pair = {"source": act["source"], "channel": act["channel"]}
    endpoint = await api.endpoint("http://127.0.0.1:9/authz")
    await new_team(api, locked=1, paid=1, target=1)  # a delivery
    delivery = await pool.fetchval(
        "SELECT t.id FROM notify_task t JOIN endpoint ep ON ep.id = t.endpoint"
        " WHERE ep.merchant_id = $1 ORDER BY t.id DESC LIMIT 1",
        SHOP_MERCHANT,
    )
    assert delivery is not None
    own = f"/api/v1/gbm/endpoints/{endpoint}"
    mine = f"/api/v1/gbm/deliveries/{delivery}"
    return {
        "team": team.team_id,
        "POST /api/v1/gbm/index/query_group_buy_market_config":
            (None, {**pair, "userId": user, "goodsId": act["goodsId"]}),
        "POST /api/v1/gbm/trade/lock_market_pay_order":
            (None, {**act, "userId": f"new-{uuid.uuid4().hex[:8]}", "outTradeNo": uuid.uuid4().hex}),
        "POST /api/v1/gbm/trade/settlement_market_pay_order":
            (None, {**pair, "userId": user, "outTradeNo": out, "outTradeTime": now_iso()}),
        "POST /api/v1/gbm/trade/refund_market_pay_order":
            (None, {**pair, "userId": user, "outTradeNo": out}),
        "GET /api/v1/gbm/teams/{teamId}": f"/api/v1/gbm/teams/{team.team_id}",
        "GET /api/v1/gbm/orders/{outTradeNo}":
            f"/api/v1/gbm/orders/{out}?source={pair['source']}&channel={pair['channel']}&userId={user}",
        "PUT /api/v1/gbm/endpoints/{endpointId}": (own, {"url": "http://127.0.0.1:9/authz"}),
        "GET /api/v1/gbm/endpoints/{endpointId}": own,
        "DELETE /api/v1/gbm/endpoints/{endpointId}": own,
        "GET /api/v1/gbm/endpoints": "/api/v1/gbm/endpoints",
        "POST /api/v1/gbm/endpoints/{endpointId}/secret/rotate": (own + "/secret/rotate", {}),
        "POST /api/v1/gbm/endpoints/{endpointId}/ping": own + "/ping",
        "POST /api/v1/gbm/endpoints/{endpointId}/recover":
            (own + "/recover", {"since": now_iso()}),
        "GET /api/v1/gbm/deliveries": "/api/v1/gbm/deliveries",
        "GET /api/v1/gbm/deliveries/{deliveryId}": mine,
        "POST /api/v1/gbm/deliveries/{deliveryId}/resend": mine + "/resend",
        "POST /api/v1/gbm/deliveries/{deliveryId}/retry-now": mine + "/retry-now",
    }  # fmt: skip


async def _shop_call(
    client: TestClient[Any, Any], route: Route, world: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    target = world[f"{route.method} {route.path}"]
    path, body = (target, None) if isinstance(target, str) else target
    async with client.request(route.method, path or route.path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_every_route_is_public_admin_merchant_or_metrics(
    client: TestClient[Any, Any],
) -> None:
    for route in _routes(client):
        kinds = [route.admin, route.merchant, route.path in PUBLIC | {MOCK, "/metrics"}]
        assert sum(kinds) == 1, f"{route.method} {route.path}: say who may call it"
        if route.path.startswith("/api/v1/gbm/"):
            assert route.merchant, route.path
        if route.path.startswith("/api/v1/admin/"):
            assert route.admin, route.path


async def test_shop_routes_refuse_no_wrong_and_revoked_keys(
    api: Api, client: TestClient[Any, Any], world: dict[str, Any]
) -> None:
    revoked = await merchant_key(client, "revoked-shop", [])
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with client.get("/api/v1/admin/merchants/revoked-shop/keys", headers=admin) as r:
        (key,) = (await r.json())["data"]
    async with client.delete(
        f"/api/v1/admin/merchants/revoked-shop/keys/{key['keyId']}", headers=admin
    ) as r:
        assert r.status == 200
    wrong = [
        {},
        {"Authorization": "Bearer gbk_" + "x" * 43},
        {"Authorization": f"Bearer {api.key}x"},
        {"Authorization": api.key},  # no scheme
        admin,  # the admin token is not a merchant key
        {"Authorization": f"Bearer {revoked}"},
    ]
    shop = [r for r in _routes(client) if r.merchant]
    assert _ids(shop) == [k for k in world if k != "team"]
    for route in shop:
        for headers in wrong:
            status, env = await _shop_call(client, route, world, headers)
            assert (status, env["code"]) == (401, "0401"), (route.path, headers, env)


async def test_another_merchants_key_sees_nothing_of_this_one(
    client: TestClient[Any, Any], world: dict[str, Any], api: Api
) -> None:
    other = await merchant_key(client, f"other-{uuid.uuid4().hex[:6]}", [("s-other", "c-other")])
    headers = {"Authorization": f"Bearer {other}"}
    lists = {"/api/v1/gbm/endpoints", "/api/v1/gbm/deliveries"}
    # Its PUT last: it makes an endpoint of its own by that id, which the others would find.
    for route in sorted(
        (r for r in _routes(client) if r.merchant), key=lambda r: r.method == "PUT"
    ):
        status, env = await _shop_call(client, route, world, headers)
        if route.path == "/api/v1/gbm/teams/{teamId}":  # no pair in the request: unknown
            assert (status, env["code"]) == (404, "E0107"), env
        elif route.path in lists:  # its own list: nothing of the other's
            assert status == 200 and env["data"] in ([], {"items": [], "nextCursor": None}), env
        elif route.method == "PUT":  # an endpoint of its own by that id, not the other's
            assert status == 200 and env["data"]["merchantId"] != SHOP_MERCHANT, env
        elif "{endpointId}" in route.path or "{deliveryId}" in route.path:
            assert (status, env["code"]) == (404, "0404"), (route.path, env)
        else:  # the request's pair is not the other merchant's
            assert (status, env["code"]) == (403, "0403"), (route.path, env)
    # The same calls with the owner's key work (the world is real).
    status, env = await _shop_call(
        client,
        next(r for r in _routes(client) if r.path == "/api/v1/gbm/teams/{teamId}"),
        world,
        api.shop,
    )
    assert status == 200, env


async def test_admin_routes_refuse_no_and_wrong_tokens(
    api: Api, client: TestClient[Any, Any]
) -> None:
    admin = [r for r in _routes(client) if r.admin]
    assert len(admin) >= 20
    path_values = {
        "{discountId}": "d1", "{goodsId}": "g1", "{activityId}": "1", "{teamId}": "12345678",
        "{eventId}": str(uuid.uuid4()), "{merchantId}": "m1", "{keyId}": "key_0123456789abcdef",
        "{endpointId}": "e1", "{deliveryId}": "1",
    }  # fmt: skip
    for route in admin:
        path = route.path
        for name, value in path_values.items():
            path = path.replace(name, value)
        for headers in ({}, {"Authorization": "Bearer nope"}, api.shop):
            async with client.request(route.method, path, json={}, headers=headers) as r:
                env = await r.json()
                assert (r.status, env["code"]) == (401, "0401"), (route.path, headers, env)


async def test_metrics_need_the_metrics_token(client: TestClient[Any, Any], api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, api.shop,
                    {"Authorization": f"Bearer {ADMIN_TOKEN}"}):  # fmt: skip
        async with client.get("/metrics", headers=headers) as r:
            assert r.status == 401, headers
    async with client.get("/metrics", headers=METRICS) as r:
        assert r.status == 200 and "groupbuy_notify_tasks" in await r.text()
    for path in PUBLIC:
        async with client.get(path) as r:
            assert r.status == 200, path
