"""Bad input is refused with 400 and writes nothing; admin config round-trips; errors are clean."""

import logging
from typing import Any

import asyncpg
import pytest

from ..conftest import Api, new_id

LOCK = "/api/v1/gbm/trade/lock_market_pay_order"


async def _counts(pool: asyncpg.Pool) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM group_buy_order) AS teams,"
        " (SELECT count(*) FROM group_buy_order_list) AS orders"
    )
    assert row is not None
    return row["teams"], row["orders"]


@pytest.mark.parametrize(
    "change",
    [
        {"userId": None},
        {"userId": 12},
        {"activityId": "abc"},
        {"activityId": 1.5},
        {"activityId": 424242424242},  # unknown activity
        {"outTradeNo": "x" * 65},
        {"outTradeNo": ""},
        {"notifyUrl": "ftp://example.com/cb"},
        {"notifyUrl": "/relative/path"},
        {"notifyUrl": "http://"},
        {"notifyUrl": "http://exa mple.com/"},
        {"teamId": "abc"},
        {"goodsId": "g 1"},
    ],
)
async def test_bad_lock_input_is_400_and_writes_nothing(
    api: Api, pool: asyncpg.Pool, change: dict[str, Any]
) -> None:
    act = await api.new_activity()
    body = {**act, "userId": "u1", "outTradeNo": new_id(), **change}
    body = {k: v for k, v in body.items() if v is not None}
    before = await _counts(pool)
    status, env = await api.call("POST", LOCK, body)
    assert (status, env["code"], env["data"]) == (400, "0002", None), env
    assert env["info"]
    assert await _counts(pool) == before


@pytest.mark.parametrize("raw", ["", "not json", "[]", '{"userId": "u1"', "null"])
async def test_malformed_json_is_400(api: Api, raw: str) -> None:
    status, env = await api.call("POST", LOCK, raw=raw)
    assert (status, env["code"]) == (400, "0002")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/admin/skus/g1", {"goodsName": "x", "originalPrice": -1, "source": "s", "channel": "c"}),
        ("/api/v1/admin/skus/g1", {"goodsName": "x", "originalPrice": "ten", "source": "s", "channel": "c"}),
        ("/api/v1/admin/skus/g1", {"goodsName": "x", "originalPrice": 1.005, "source": "s", "channel": "c"}),
        ("/api/v1/admin/discounts/d1", {"discountName": "x", "marketPlan": "MJ", "marketExpr": "100"}),
        ("/api/v1/admin/discounts/d1", {"discountName": "x", "marketPlan": "XX", "marketExpr": "1"}),
        ("/api/v1/admin/activities/abc", {}),
        ("/api/v1/admin/activities/77", {"activityName": "a", "discountId": "missing-discount",
         "startTime": "2026-01-01T00:00:00Z", "endTime": "2027-01-01T00:00:00Z"}),
        ("/api/v1/admin/activities/77", {"activityName": "a", "discountId": "d",
         "startTime": "2026-01-01T00:00:00", "endTime": "2027-01-01T00:00:00Z"}),
        ("/api/v1/admin/activities/77", {"activityName": "a", "discountId": "d",
         "startTime": "2027-01-01T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"}),
    ],
)  # fmt: skip
async def test_bad_admin_input_is_400(api: Api, path: str, body: dict[str, Any]) -> None:
    status, env = await api.call("PUT", path, body, admin=True)
    assert (status, env["code"]) == (400, "0002"), env
    status, env = await api.call("GET", path, admin=True)
    assert status in (400, 404)


async def test_admin_requires_the_token(api: Api) -> None:
    status, env = await api.call("GET", "/api/v1/admin/skus/anything")
    assert (status, env["code"]) == (401, "0401")
    async with api.client.get(
        "/api/v1/admin/skus/anything", headers={"Authorization": "Bearer wrong"}
    ) as resp:
        assert resp.status == 401


async def test_admin_put_is_create_or_replace_and_get_returns_it(api: Api) -> None:
    act = await api.new_activity()
    path = f"/api/v1/admin/activities/{act['activityId']}"
    status, env = await api.call("GET", path, admin=True)
    assert status == 200
    stored = env["data"]
    stored_in = {
        k: v for k, v in stored.items() if k not in ("createTime", "updateTime", "activityId")
    }
    stored_in["target"] = 7
    status, env = await api.call("PUT", path, stored_in, admin=True)
    assert status == 200 and env["data"]["target"] == 7
    status, env = await api.call("GET", path, admin=True)
    assert env["data"]["target"] == 7 and env["data"]["goods"] == stored["goods"]
    status, env = await api.call("GET", f"/api/v1/admin/skus/{act['goodsId']}", admin=True)
    assert env["data"]["originalPrice"] == 100 and env["data"]["goodsId"] == act["goodsId"]


async def test_goods_mapped_to_two_activities_is_a_conflict(api: Api) -> None:
    act = await api.new_activity()
    other = await api.new_activity()
    path = f"/api/v1/admin/activities/{other['activityId']}"
    _, env = await api.call("GET", path, admin=True)
    body = {
        k: v for k, v in env["data"].items() if k not in ("createTime", "updateTime", "activityId")
    }
    body["goods"] = [
        {"source": act["source"], "channel": act["channel"], "goodsId": act["goodsId"]}
    ]
    status, env = await api.call("PUT", path, body, admin=True)
    assert (status, env["code"]) == (409, "0003")


async def test_unknown_route_and_method_use_the_envelope(api: Api) -> None:
    status, env = await api.call("GET", "/nope")
    assert (status, env["code"]) == (404, "0404")
    status, env = await api.call("DELETE", LOCK)
    assert status == 405 and env["data"] is None


async def test_unexpected_error_is_500_without_stack_trace(
    api: Api, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from groupbuy_async.trade import orders

    async def explode(*args: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(orders, "lock_order", explode)
    act = await api.new_activity()
    with caplog.at_level(logging.ERROR):
        async with api.client.post(LOCK, json={**act, "userId": "u", "outTradeNo": new_id()}) as r:
            text = await r.text()
            assert r.status == 500 and r.headers["X-Request-Id"]
    assert '"code":"0001"' in text
    assert "secret internals" not in text and "Traceback" not in text
    assert any("secret internals" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.call("GET", "/healthz"))[0] == 200
    status, env = await api.call("GET", "/readyz")
    assert status == 200 and env["data"]["checks"] == {"postgres": "ok"}


async def test_api_needs_no_redis(settings: Any) -> None:
    from ..conftest import start_client

    client = await start_client(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    try:
        async with client.get("/readyz") as resp:
            env = await resp.json()
            assert resp.status == 200 and env["data"]["checks"] == {"postgres": "ok"}
    finally:
        await client.close()


async def test_openapi_covers_every_route(api: Api) -> None:
    from groupbuy_async.http.trade_routes import TRADE_ROUTES

    async with api.client.get("/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    for route in TRADE_ROUTES:
        assert route.method.lower() in doc["paths"][route.path]
    lock = doc["paths"][LOCK]["post"]
    assert lock["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("LockIn")
    assert "notifyUrl" in doc["components"]["schemas"]["LockIn"]["properties"]


SETTLE = "/api/v1/gbm/trade/settlement_market_pay_order"


@pytest.mark.parametrize(
    "change",
    [
        {"outTradeTime": "2026-11-26T10:00:00"},  # no offset
        {"outTradeTime": "yesterday"},
        {"outTradeTime": 1764151200},
        {"userId": None},
        {"outTradeNo": ["a"]},
        {"source": "s" * 65},
    ],
)
async def test_bad_settle_input_is_400_and_settles_nothing(
    api: Api, pool: asyncpg.Pool, change: dict[str, Any]
) -> None:
    act = await api.new_activity()
    out = new_id()
    await api.lock(**act, userId="u1", outTradeNo=out)
    body = {"source": act["source"], "channel": act["channel"], "userId": "u1",
            "outTradeNo": out, "outTradeTime": "2026-11-26T10:00:00+08:00", **change}  # fmt: skip
    body = {k: v for k, v in body.items() if v is not None}
    status, env = await api.call("POST", SETTLE, body)
    assert (status, env["code"]) == (400, "0002"), env
    assert (
        await pool.fetchval("SELECT status FROM group_buy_order_list WHERE out_trade_no = $1", out)
        == 0
    )


async def test_oversize_body_is_refused_in_the_envelope(api: Api) -> None:
    status, env = await api.call("POST", LOCK, raw='{"userId": "' + "x" * 300_000 + '"}')
    assert (status, env["code"], env["data"]) == (413, "0002", None)


async def test_head_on_health_checks_is_200(api: Api) -> None:
    for path in ("/healthz", "/readyz"):
        async with api.client.head(path) as resp:
            assert resp.status == 200, path
            assert await resp.read() == b""


async def test_public_team_view_does_not_show_the_notify_url(api: Api) -> None:
    from ..conftest import now_iso

    act = await api.new_activity(target=1)
    out = new_id()
    status, env = await api.lock(**act, userId="u1", outTradeNo=out)
    assert status == 200, env
    team_id = env["data"]["teamId"]
    status, env = await api.settle(source=act["source"], channel=act["channel"], userId="u1",
                                   outTradeNo=out, outTradeTime=now_iso())  # fmt: skip
    assert status == 200 and env["data"]["teamCompleted"] is True, env
    team = await api.team(team_id)
    assert team["teamId"] == team_id and team["status"] == 1
    assert "notifyUrl" not in team and act["notifyUrl"] not in str(team)
    async with api.client.get("/openapi.json") as resp:
        doc = await resp.json()
    assert "notifyUrl" not in doc["components"]["schemas"]["TeamOut"]["properties"]
    # Operators still see it, in the notify task view.
    status, env = await api.call("GET", f"/api/v1/admin/notify_tasks/{team_id}", admin=True)
    assert status == 200 and env["data"]["notifyUrl"] == act["notifyUrl"]


def _undescribed(node: Any, where: str = "") -> list[str]:
    """Every property (of any object schema in the document) and parameter with no description."""
    missing: list[str] = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            if not (isinstance(prop, dict) and str(prop.get("description", "")).strip()):
                missing.append(f"{where}.{name}")
        if "in" in node and "name" in node and not str(node.get("description", "")).strip():
            missing.append(f"{where} parameter {node['name']}")
        for key, value in node.items():
            missing += _undescribed(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            missing += _undescribed(value, f"{where}[{i}]")
    return missing


async def test_openapi_describes_every_field(api: Api) -> None:
    async with api.client.get("/openapi.json") as resp:
        doc = await resp.json()
    schemas = doc["components"]["schemas"]
    assert {"LockIn", "TeamOut", "ActivityIn", "NotifyTaskDetail"} <= set(schemas)
    assert _undescribed(doc) == []
    # The codes a client cannot guess are spelled out.
    assert "2 failed" in schemas["TeamOut"]["properties"]["status"]["description"]
    assert "1 paid" in schemas["LockOut"]["properties"]["tradeOrderStatus"]["description"]
    activity = schemas["ActivityIn"]["properties"]
    assert "3 abandoned" in activity["status"]["description"]
    assert "minutes" in activity["validTime"]["description"]
    assert '"100,10"' in schemas["DiscountIn"]["properties"]["marketExpr"]["description"]
    assert "3 error" in schemas["NotifyTaskOut"]["properties"]["notifyStatus"]["description"]
