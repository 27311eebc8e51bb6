"""Bad input is refused with 400 and writes nothing; admin config round-trips; errors are clean."""

import asyncio
import json
import logging
from typing import Any

import asyncpg
import pytest

from ..conftest import ADMIN_TOKEN, Api, new_id

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
        {"activityId": 0},
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


async def test_unknown_activity_in_a_lock_is_404_and_writes_nothing(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity()
    before = await _counts(pool)
    body = {**act, "activityId": 424242424242, "userId": "u1", "outTradeNo": new_id()}
    status, env = await api.call("POST", LOCK, body)
    assert (status, env["code"], env["data"]) == (404, "E0111", None), env
    assert "424242424242" in env["info"]
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


ADMIN_ROUTE = "/api/v1/admin/skus/anything"


@pytest.mark.parametrize("token", [None, ""])
async def test_admin_without_a_token_refuses_every_bearer(settings: Any, token: str | None) -> None:
    from ..conftest import start_client

    client = await start_client(settings.model_copy(update={"admin_token": token}))
    try:
        for given in ("Bearer None", "Bearer ", "Bearer", "Bearer null", "Bearer  None", ""):
            headers = {"Authorization": given} if given else {}
            async with client.get(ADMIN_ROUTE, headers=headers) as resp:
                env = await resp.json()
                assert (resp.status, env["code"], env["data"]) == (401, "0401", None), given
                assert "not set" in env["info"]
    finally:
        await client.close()


async def _raw_get(api: Api, path: str, authorization: bytes) -> tuple[int, dict[str, Any]]:
    """A request written byte by byte: aiohttp's client refuses or mangles non-UTF-8 headers."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: " + authorization + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer \xff", b"Bearer " + ADMIN_TOKEN.encode() + b"\xff", b"\xff\xfe"],
)
async def test_admin_header_that_is_not_utf8_is_401_not_500(api: Api, authorization: bytes) -> None:
    status, env = await _raw_get(api, ADMIN_ROUTE, authorization)
    assert (status, env["code"]) == (401, "0401"), env
    # The same raw request with the real token passes the check: the 401 is the byte's.
    status, env = await _raw_get(api, ADMIN_ROUTE, b"Bearer " + ADMIN_TOKEN.encode())
    assert (status, env["code"]) == (404, "0404"), env


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
    from groupbuy_async.trade import locking

    async def explode(*args: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(locking, "lock_order", explode)
    act = await api.new_activity()
    with caplog.at_level(logging.ERROR):
        body = {**act, "userId": "u", "outTradeNo": new_id()}
        async with api.client.post(LOCK, json=body, headers=api.shop) as r:
            text = await r.text()
            assert r.status == 500 and r.headers["X-Request-Id"]
    assert '"code":"0001"' in text
    assert "secret internals" not in text and "Traceback" not in text
    assert any("secret internals" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


async def test_a_connection_whose_protocol_broke_is_503_not_500(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg's own state errors on a connection cut mid-statement (PostgreSQL stopped under
    load) are the outage they come from: 503 with Retry-After, never 500."""
    import asyncpg

    from groupbuy_async.trade import locking

    async def broken(*args: Any) -> None:
        raise asyncpg.InternalClientError(
            "cannot switch to state 15; another operation is in progress"
        )

    monkeypatch.setattr(locking, "lock_order", broken)
    act = await api.new_activity()
    status, env = await api.lock(**act, userId="u", outTradeNo=new_id())
    assert (status, env["code"]) == (503, "0503"), env


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
    from groupbuy_async.http.catalog_routes import CATALOG_ROUTES
    from groupbuy_async.http.trade_routes import TRADE_ROUTES

    async with api.client.get("/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    for route in [*CATALOG_ROUTES, *TRADE_ROUTES]:
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


ACTIVITY_BODY = {
    "activityName": "a", "status": 1,
    "startTime": "2026-01-01T00:00:00Z", "endTime": "2099-01-01T00:00:00Z",
}  # fmt: skip


async def _activity_body(api: Api, activity_id: int) -> dict[str, Any]:
    status, env = await api.call("GET", f"/api/v1/admin/activities/{activity_id}", admin=True)
    assert status == 200, env
    return {
        k: v for k, v in env["data"].items() if k not in ("createTime", "updateTime", "activityId")
    }


def _names_no_table(info: str) -> None:
    for leak in ("table", "constraint", "Key (", "group_buy", "sc_sku", "_fkey", "_key"):
        assert leak not in info, info


async def test_activity_cannot_bind_goods_under_a_source_channel_its_sku_lacks(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(source="s01", channel="c01")
    other = await api.new_activity()
    body = await _activity_body(api, other["activityId"])
    wrong = {"source": "s02", "channel": "c02", "goodsId": act["goodsId"]}
    # An existing activity keeps its bindings when the new list is refused.
    path = f"/api/v1/admin/activities/{other['activityId']}"
    status, env = await api.call("PUT", path, {**body, "goods": [wrong]}, admin=True)
    assert (status, env["code"]) == (400, "0002"), env
    assert act["goodsId"] in env["info"] and "goodsId" in env["info"]
    assert "s02" in env["info"] and "c02" in env["info"]
    _names_no_table(env["info"])
    assert (await _activity_body(api, other["activityId"]))["goods"] == body["goods"]
    # A new activity is not created at all.
    new_path = f"/api/v1/admin/activities/{new_id_int()}"
    status, env = await api.call("PUT", new_path, {**body, "goods": [wrong]}, admin=True)
    assert (status, env["code"]) == (400, "0002"), env
    assert (await api.call("GET", new_path, admin=True))[0] == 404
    assert not await pool.fetchval(
        "SELECT count(*) FROM sc_sku_activity WHERE source = 's02' AND goods_id = $1",
        act["goodsId"],
    )


async def test_changing_a_bound_skus_source_or_channel_is_refused(api: Api) -> None:
    act = await api.new_activity(source="s01", channel="c01")
    path = f"/api/v1/admin/skus/{act['goodsId']}"
    sku = {"goodsName": "goods", "originalPrice": 100, "source": "s01", "channel": "c01"}
    for change in ({"source": "s09"}, {"channel": "c09"}):
        status, env = await api.call("PUT", path, {**sku, **change}, admin=True)
        assert (status, env["code"], env["data"]) == (409, "E0301", None), env
        assert act["goodsId"] in env["info"] and str(act["activityId"]) in env["info"]
        _names_no_table(env["info"])
    _, env = await api.call("GET", path, admin=True)
    assert (env["data"]["source"], env["data"]["channel"]) == ("s01", "c01")
    # Name and price may change while bound; the trade goes on under s01/c01.
    status, env = await api.call("PUT", path, {**sku, "originalPrice": 90}, admin=True)
    assert status == 200, env
    status, env = await api.lock(**act, userId="u1", outTradeNo=new_id())
    assert status == 200 and env["data"]["originalPrice"] == 90, env
    # An unbound SKU may move to another source/channel.
    await api._put("/api/v1/admin/skus/unbound-" + act["goodsId"], sku)
    status, env = await api.call(
        "PUT", "/api/v1/admin/skus/unbound-" + act["goodsId"], {**sku, "source": "s09"}, admin=True
    )
    assert status == 200 and env["data"]["source"] == "s09", env


async def test_constraint_errors_name_the_field_not_the_table(api: Api) -> None:
    act = await api.new_activity()
    body = await _activity_body(api, act["activityId"])
    path = f"/api/v1/admin/activities/{new_id_int()}"
    status, env = await api.call(
        "PUT", path, {**ACTIVITY_BODY, "discountId": "missing-discount"}, admin=True
    )
    assert (status, env["code"]) == (400, "0002"), env
    assert env["info"] == "discountId missing-discount does not exist"
    ghost = {"source": "s01", "channel": "c01", "goodsId": "no-such-goods"}
    status, env = await api.call("PUT", path, {**body, "goods": [ghost]}, admin=True)
    assert (status, env["code"]) == (400, "0002"), env
    assert "goodsId no-such-goods" in env["info"] and env["info"].startswith("goods")
    _names_no_table(env["info"])
    taken = {"source": act["source"], "channel": act["channel"], "goodsId": act["goodsId"]}
    status, env = await api.call("PUT", path, {**body, "goods": [taken]}, admin=True)
    assert (status, env["code"]) == (409, "0003"), env
    assert f"goodsId {act['goodsId']}" in env["info"] and "another activity" in env["info"]
    _names_no_table(env["info"])


def new_id_int() -> int:
    return int(new_id("")[:12], 16) % 10**12 + 1


ADMIN = "/api/v1/admin"
# (list path, item key, table, key column) of each admin collection.
COLLECTIONS = [
    ("discounts", "discountId", "group_buy_discount", "discount_id"),
    ("skus", "goodsId", "sku", "goods_id"),
    ("activities", "activityId", "group_buy_activity", "activity_id"),
]


async def _pages(api: Api, kind: str, limit: int) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        query = f"?limit={limit}" + (f"&after={after}" if after is not None else "")
        status, env = await api.call("GET", f"{ADMIN}/{kind}{query}", admin=True)
        assert (status, env["code"]) == (200, "0000"), env
        pages.append(env["data"])
        after = env["data"]["nextCursor"]
        if after is None:
            return pages
        assert len(pages) < 1000, "the cursor does not advance"


@pytest.mark.parametrize(("kind", "key", "table", "column"), COLLECTIONS)
async def test_admin_lists_page_through_everything_once(
    api: Api, pool: asyncpg.Pool, kind: str, key: str, table: str, column: str
) -> None:
    for _ in range(5):
        await api.new_activity()
    expected = [r[0] for r in await pool.fetch(f"SELECT {column} FROM {table} ORDER BY 1")]
    limit = max(2, len(expected) // 5)
    pages = await _pages(api, kind, limit)
    # PostgreSQL's order, nothing twice, nothing missing.
    assert [item[key] for page in pages for item in page["items"]] == expected
    assert len(pages) >= 3
    for page in pages[:-1]:
        assert len(page["items"]) == limit and page["nextCursor"] == page["items"][-1][key]
    assert pages[-1]["nextCursor"] is None and 1 <= len(pages[-1]["items"]) <= limit
    # Items are what GET answers for each.
    item = pages[1]["items"][0]
    status, env = await api.call("GET", f"{ADMIN}/{kind}/{item[key]}", admin=True)
    assert (status, env["data"]) == (200, item)
    # Default limit 100.
    status, env = await api.call("GET", f"{ADMIN}/{kind}", admin=True)
    assert status == 200 and len(env["data"]["items"]) == min(100, len(expected))


@pytest.mark.parametrize("kind", ["discounts", "skus", "activities"])
@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=ten", "after="])
async def test_admin_list_refuses_bad_paging(api: Api, kind: str, query: str) -> None:
    status, env = await api.call("GET", f"{ADMIN}/{kind}?{query}", admin=True)
    assert (status, env["code"], env["data"]) == (400, "0002", None), env


async def test_delete_refused_while_referenced_then_allowed(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity()
    activity_path = f"{ADMIN}/activities/{act['activityId']}"
    _, env = await api.call("GET", activity_path, admin=True)
    stored = env["data"]
    discount_path = f"{ADMIN}/discounts/{stored['discountId']}"
    sku_path = f"{ADMIN}/skus/{act['goodsId']}"
    # Used by the activity: refused, nothing deleted.
    for path, name in ((discount_path, stored["discountId"]), (sku_path, act["goodsId"])):
        status, env = await api.call("DELETE", path, admin=True)
        assert (status, env["code"], env["data"]) == (409, "E0301", None), env
        assert name in env["info"] and str(act["activityId"]) in env["info"], env
        _names_no_table(env["info"])
        assert (await api.call("GET", path, admin=True))[0] == 200
    # An activity without teams goes, with its goods bindings.
    status, env = await api.call("DELETE", activity_path, admin=True)
    assert (status, env["code"], env["data"]) == (200, "0000", stored), env
    assert (await api.call("GET", activity_path, admin=True))[1]["code"] == "0404"
    assert not await pool.fetchval(
        "SELECT count(*) FROM sc_sku_activity WHERE activity_id = $1", act["activityId"]
    )
    # Nothing refers to the SKU and the discount any more.
    for path, key in ((sku_path, "goodsId"), (discount_path, "discountId")):
        _, before = await api.call("GET", path, admin=True)
        status, env = await api.call("DELETE", path, admin=True)
        assert (status, env["data"]) == (200, before["data"]), env
        assert env["data"][key] in path
    for path in (activity_path, sku_path, discount_path):
        for method in ("GET", "DELETE"):
            status, env = await api.call(method, path, admin=True)
            assert (status, env["code"], env["data"]) == (404, "0404", None), (method, path, env)


async def test_an_activity_with_teams_is_never_deleted(api: Api, pool: asyncpg.Pool) -> None:
    act = await api.new_activity()
    status, env = await api.lock(**act, userId="u1", outTradeNo=new_id())
    assert status == 200, env
    path = f"{ADMIN}/activities/{act['activityId']}"
    _, before = await api.call("GET", path, admin=True)
    counts = await _counts(pool)
    status, env = await api.call("DELETE", path, admin=True)
    assert (status, env["code"], env["data"]) == (409, "E0301", None), env
    assert str(act["activityId"]) in env["info"] and "teams" in env["info"]
    _names_no_table(env["info"])
    assert await api.call("GET", path, admin=True) == (200, before)
    assert await _counts(pool) == counts
    status, env = await api.lock(**act, userId="u2", outTradeNo=new_id())
    assert status == 200, env


async def test_list_and_delete_need_the_admin_token(api: Api) -> None:
    act = await api.new_activity()
    for kind in ("discounts", "skus", "activities"):
        assert (await api.call("GET", f"{ADMIN}/{kind}"))[0] == 401
    path = f"{ADMIN}/activities/{act['activityId']}"
    status, env = await api.call("DELETE", path)
    assert (status, env["code"]) == (401, "0401")
    assert (await api.call("GET", path, admin=True))[0] == 200
    status, env = await api.call("DELETE", f"{ADMIN}/activities/abc", admin=True)
    assert (status, env["code"]) == (400, "0002")


async def test_delete_racing_a_first_lock_never_orphans_a_team(
    api: Api, pool: asyncpg.Pool
) -> None:
    import asyncio

    async def delete_after(delay: float, path: str) -> tuple[int, dict[str, Any]]:
        await asyncio.sleep(delay)
        return await api.call("DELETE", path, admin=True)

    for i in range(20):
        act = await api.new_activity()
        # The delete starts 0 to 9.5 ms after the lock: each side wins some of the races.
        (d_status, d_env), (l_status, l_env) = await asyncio.gather(
            delete_after(i / 2000, f"{ADMIN}/activities/{act['activityId']}"),
            api.lock(**act, userId="u1", outTradeNo=new_id()),
        )
        outcome = (d_status, d_env["code"], l_status, l_env["code"])
        # Exactly one wins: the team keeps its activity, or the lock finds none.
        assert outcome in {(409, "E0301", 200, "0000"), (200, "0000", 404, "E0111")}, outcome
        teams = await pool.fetchval(
            "SELECT count(*) FROM group_buy_order WHERE activity_id = $1", act["activityId"]
        )
        assert teams == (1 if l_status == 200 else 0)


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
