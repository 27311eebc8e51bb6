"""The published contract: what OpenAPI states is what the server does. Input the schema
refuses is refused with 400 and writes nothing; each operation declares every code it can
answer (tests/contract.py checks every answer of the suite against that)."""

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from groupbuy_async import errors
from groupbuy_async.http.app import create_app
from groupbuy_async.http.envelope import http_status
from groupbuy_async.http.routing import ROUTE_TABLE, declared_errors
from groupbuy_async.settings import Settings
from groupbuy_async.trade.rules import MARKET_EXPRS

from ..conftest import Api, merchant_key, new_id

LOCK = "/api/v1/gbm/trade/lock_market_pay_order"
SETTLE = "/api/v1/gbm/trade/settlement_market_pay_order"
EVENTS = "/api/v1/admin/events"


async def _openapi(api: Api) -> dict[str, Any]:
    async with api.client.get("/openapi.json") as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def _order(pool: asyncpg.Pool, out_trade_no: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT o.status, o.out_trade_time, t.complete_count,"
        " (SELECT count(*) FROM notify_task n WHERE n.team_id = o.team_id) AS events"
        " FROM group_buy_order_list o JOIN group_buy_order t ON t.team_id = o.team_id"
        " WHERE o.out_trade_no = $1",
        out_trade_no,
    )
    assert row is not None
    return row


@pytest.mark.parametrize(
    "paid_at",
    [
        "0001-01-01T00:00:00+14:00",  # was 500 0001: year 0 in UTC, out of the driver's range
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",  # readable, but long before the order was locked
    ],
)
async def test_a_payment_time_the_order_cannot_have_is_400_and_writes_nothing(
    api: Api, pool: asyncpg.Pool, paid_at: str
) -> None:
    act = await api.new_activity(target=1)
    out = new_id()
    status, env = await api.lock(**act, userId="u1", outTradeNo=out)
    assert status == 200, env
    status, env = await api.settle(
        source=act["source"], channel=act["channel"], userId="u1", outTradeNo=out,
        outTradeTime=paid_at,
    )  # fmt: skip
    assert (status, env["code"], env["data"]) == (400, "0002", None), env
    assert "outTradeTime" in env["info"]
    order = await _order(pool, out)
    assert (order["status"], order["out_trade_time"], order["complete_count"]) == (0, None, 0)
    assert order["events"] == 0


async def test_payment_times_are_judged_with_the_clock_skew_allowed(
    api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity(target=1)
    out = new_id()
    await api.lock(**act, userId="u1", outTradeNo=out)
    where = {"source": act["source"], "channel": act["channel"], "userId": "u1", "outTradeNo": out}
    locked = datetime.now(UTC)
    status, env = await api.settle(
        **where, outTradeTime=(locked - timedelta(minutes=6)).isoformat()
    )
    assert (status, env["code"]) == (400, "0002"), env
    assert "before the order was locked" in env["info"] and "5 minutes" in env["info"]
    # A merchant's clock 4 minutes behind ours stamps a payment made after the lock so.
    status, env = await api.settle(
        **where, outTradeTime=(locked - timedelta(minutes=4)).isoformat()
    )
    assert (status, env["code"], env["data"]["teamCompleted"]) == (200, "0000", True), env
    assert (await _order(pool, out))["status"] == 1


@pytest.mark.parametrize(
    "times",
    [
        {"startTime": "0001-01-01T00:00:00+14:00"},  # was 500 0001
        {"endTime": "9999-12-31T23:59:59-14:00"},
        {"startTime": "2026-01-01T00:00:00"},
    ],
)
async def test_an_activity_time_the_database_cannot_hold_is_400_and_stores_nothing(
    api: Api, times: dict[str, str]
) -> None:
    discount = f"d{new_id()}"
    status, env = await api.call(
        "PUT", f"/api/v1/admin/discounts/{discount}",
        {"discountName": "d", "marketPlan": "ZJ", "marketExpr": "1"}, admin=True,
    )  # fmt: skip
    assert status == 200, env
    body = {
        "activityName": "a", "discountId": discount,
        "startTime": "2026-01-01T00:00:00Z", "endTime": "9999-12-31T23:59:59Z", **times,
    }  # fmt: skip
    path = f"/api/v1/admin/activities/{int(new_id('')[:12], 16) + 1}"
    status, env = await api.call("PUT", path, body, admin=True)
    assert (status, env["code"]) == (400, "0002"), env
    assert "RFC 3339" in env["info"]
    status, env = await api.call("GET", path, admin=True)
    assert (status, env["code"]) == (404, "0404")


@pytest.mark.parametrize(
    ("plan", "expr"),
    [("ZK", "0"), ("ZK", "0.00001"), ("ZJ", " 20"), ("ZJ", "2e1"), ("MJ", "100, 10")],
)
async def test_a_market_expr_outside_its_plans_pattern_is_400(
    api: Api, plan: str, expr: str
) -> None:
    path = f"/api/v1/admin/discounts/d{new_id()}"
    body = {"discountName": "d", "marketPlan": plan, "marketExpr": expr}
    status, env = await api.call("PUT", path, body, admin=True)
    assert (status, env["code"]) == (400, "0002"), env
    assert f"{plan} expects" in env["info"]
    status, env = await api.call("GET", path, admin=True)
    assert status == 404


@pytest.mark.parametrize(
    "url", ["not a url", "http://shop.example/{id}", "http://1.2.3/cb", "HTTP://shop.example/"]
)
async def test_a_notify_url_is_refused_exactly_when_its_pattern_refuses_it(
    api: Api, pool: asyncpg.Pool, url: str
) -> None:
    import re

    doc = await _openapi(api)
    pattern = doc["components"]["schemas"]["EndpointIn"]["properties"]["url"]["pattern"]
    await merchant_key(api.client, "url-patterns", [])
    path = "/api/v1/admin/merchants/url-patterns/endpoints/e1"
    status, env = await api.call("PUT", path, {"url": url}, admin=True)
    if re.fullmatch(pattern, url):
        assert status == 200, env
    else:
        assert (status, env["code"]) == (400, "0002"), env
        assert "url" in env["info"]
        lock = {
            **await api.new_activity(),
            "userId": "u1",
            "outTradeNo": new_id(),
            "notifyUrl": url,
        }
        status, env = await api.call("POST", "/api/v1/gbm/trade/lock_market_pay_order", lock)
        assert (status, env["code"]) == (400, "0002") and "notifyUrl" in env["info"], env


async def test_the_schema_states_the_input_rules(api: Api) -> None:
    doc = await _openapi(api)
    schemas = doc["components"]["schemas"]
    discount = schemas["DiscountIn"]
    by_plan = {
        branch["properties"]["marketPlan"]["const"]: branch["properties"]["marketExpr"]["pattern"]
        for branch in discount["oneOf"]
    }
    assert by_plan == {plan: pattern for plan, (pattern, _) in MARKET_EXPRS.items()}
    url = schemas["EndpointIn"]["properties"]["url"]
    assert (url["format"], url["pattern"][:17]) == ("uri", "^[Hh][Tt][Tt][Pp]")
    for model, field in (("SettleIn", "outTradeTime"), ("ActivityIn", "startTime")):
        time = schemas[model]["properties"][field]
        assert time["format"] == "date-time" and "1970" in time["description"]
        assert time["pattern"].startswith("^((19[7-9]")
    assert "endTime is after startTime" in schemas["ActivityIn"]["description"]
    assert schemas["ActivityIn"]["properties"]["goods"]["uniqueItems"] is True
    events = doc["paths"][EVENTS]["get"]["responses"]["400"]
    assert "after: no event with this id" in events["description"]


async def test_after_naming_no_event_is_the_declared_400(api: Api) -> None:
    status, env = await api.call(
        "GET", f"{EVENTS}?after=00000000-0000-4000-8000-000000000000", admin=True
    )
    assert (status, env["code"], env["info"]) == (400, "0002", "after: no event with this id")


async def test_status_integers_are_enums(api: Api) -> None:
    schemas = (await _openapi(api))["components"]["schemas"]
    for model, field in [
        ("LockOut", "tradeOrderStatus"), ("RefundOut", "tradeOrderStatus"),
        ("OrderOut", "tradeOrderStatus"), ("RefundOut", "teamStatus"), ("OrderOut", "teamStatus"),
        ("TeamOut", "status"), ("NotifyTaskOut", "notifyStatus"), ("EventOut", "notifyStatus"),
    ]:  # fmt: skip
        prop = schemas[model]["properties"][field]
        values = [0, 1, 2, 3, 4] if field == "notifyStatus" else [0, 1, 2, 3]  # 4: held
        assert (prop["type"], prop["enum"]) == ("integer", values), (model, field)
        assert len(prop["x-enum-varnames"]) == len(values)
        for value in prop["enum"]:
            assert f"{value} " in prop["description"], (model, field, value)
    assert schemas["NotifyTaskOut"]["properties"]["type"]["enum"] == [
        "team.completed", "team.failed", "order.closed", "order.refunded", "endpoint.disabled",
    ]  # fmt: skip


def _codes(operation: dict[str, Any], status: str) -> list[str]:
    schema = operation["responses"][status]["content"]["application/json"]["schema"]
    return schema["properties"]["code"]["enum"]  # type: ignore[no-any-return]


async def test_each_operation_declares_the_codes_it_can_answer(api: Api) -> None:
    doc = await _openapi(api)
    lock = doc["paths"][LOCK]["post"]
    assert set(_codes(lock, "409")) == {
        "E0006", "E0101", "E0102", "E0103", "E0108", "E0109", "E0110",
    }  # fmt: skip
    assert set(_codes(lock, "404")) == {"E0002", "E0107", "E0111"}
    assert _codes(lock, "400") == ["0002"] and _codes(lock, "413") == ["0002"]
    settle = doc["paths"][SETTLE]["post"]
    assert set(_codes(settle, "409")) == {"E0105", "E0106", "E0112", "E0113", "E0114"}
    replay = doc["paths"]["/api/v1/admin/events/{eventId}/replay"]["post"]
    assert (_codes(replay, "401"), _codes(replay, "409")) == (["0401"], ["E0201"])
    no_database = {"/healthz", "/openapi.json", "/api/v1/test/group_buy_notify"}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert _codes(operation, "500") == ["0001"], (method, path)
            for status, response in responses.items():
                assert "X-Request-Id" in response["headers"], (method, path, status)
            unavailable = responses.get("503")
            assert (unavailable is None) == (path in no_database), (method, path)
            if unavailable is not None:
                assert _codes(operation, "503") == ["0503"]
                assert "Retry-After" in unavailable["headers"]
    headers = doc["components"]["headers"]
    assert headers["X-Request-Id"]["required"] and headers["Retry-After"]["required"]
    assert "0405" in doc["info"]["description"]


async def test_a_method_a_path_lacks_is_405_0405_with_allow(api: Api) -> None:
    async with api.client.patch(LOCK, json={}) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
        assert (await resp.json())["code"] == "0405"


def test_every_error_is_declared_by_a_route(settings: Settings) -> None:
    """An error class no route declares is either dead or raised undeclared."""
    routes = create_app(settings)[ROUTE_TABLE]
    declared = {(a.http_status, a.code) for r in routes for a in declared_errors(r)}
    unrouted = {errors.NotFound, errors.MethodNotAllowed}  # no operation: a path or method
    for error in set(errors.ALL_ERRORS) - unrouted:
        assert (http_status(error), error.code) in declared, error.__name__


_KEYWORDS = {
    "$ref", "additionalProperties", "allOf", "anyOf", "const", "default", "deprecated",
    "description", "enum", "exclusiveMaximum", "exclusiveMinimum", "format", "items",
    "maxItems", "maxLength", "maximum", "minItems", "minLength", "minimum", "multipleOf", "not",
    "oneOf", "pattern", "properties", "required", "title", "type", "uniqueItems",
}  # fmt: skip


def _unknown_keywords(schema: Any, where: str) -> list[str]:
    """Keys of a schema that JSON Schema does not define (pydantic's "ge", say): a client and
    a fuzzer ignore them, so the rule they were meant to state is not stated."""
    if not isinstance(schema, dict):
        return []
    found = [f"{where}: {k}" for k in schema if k not in _KEYWORDS and not k.startswith("x-")]
    for key in ("items", "additionalProperties", "not"):
        found += _unknown_keywords(schema.get(key), f"{where}/{key}")
    for key in ("allOf", "anyOf", "oneOf"):
        for i, branch in enumerate(schema.get(key, [])):
            found += _unknown_keywords(branch, f"{where}/{key}[{i}]")
    for name, prop in schema.get("properties", {}).items():
        found += _unknown_keywords(prop, f"{where}.{name}")
    return found


async def test_every_schema_keyword_is_json_schemas(api: Api) -> None:
    doc = await _openapi(api)
    found = []
    for name, schema in doc["components"]["schemas"].items():
        found += _unknown_keywords(schema, name)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for param in operation["parameters"]:
                found += _unknown_keywords(param["schema"], f"{method} {path} {param['name']}")
    assert found == []


async def test_every_schema_reference_resolves_to_a_component(api: Api) -> None:
    # Two models of one name once made pydantic qualify both, and four operations named one
    # that the components did not have.
    doc = await _openapi(api)
    names = set(doc["components"]["schemas"])
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs - names == set()
    assert [name for name in names if "__" in name] == []


async def test_a_body_is_required_unless_every_field_is_optional(api: Api) -> None:
    """No body at all is read as {}: found by the fuzzer, a bodiless run answered 200 while
    OpenAPI said the body was required."""
    paths = (await _openapi(api))["paths"]
    assert paths[LOCK]["post"]["requestBody"]["required"] is True
    run = "/api/v1/admin/notify/run"
    assert paths[run]["post"]["requestBody"]["required"] is False
    status, env = await api.call("POST", run, admin=True)
    assert (status, env["code"]) == (200, "0000")
