"""The published contract: what OpenAPI states is what the server does. Each operation declares
every code it can answer (tests/contract.py checks every answer of the suite against that)."""

from typing import Any

from groupbuy_async import errors
from groupbuy_async.http.app import create_app
from groupbuy_async.http.routing import ROUTE_TABLE, declared_errors
from groupbuy_async.settings import Settings

from ..conftest import Api

LOCK = "/api/v1/gbm/trade/lock_market_pay_order"
SETTLE = "/api/v1/gbm/trade/settlement_market_pay_order"
EVENTS = "/api/v1/admin/events"


async def _openapi(api: Api) -> dict[str, Any]:
    async with api.client.get("/openapi.json") as resp:
        return await resp.json()  # type: ignore[no-any-return]


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
        assert (prop["type"], prop["enum"]) == ("integer", [0, 1, 2, 3]), (model, field)
        assert len(prop["x-enum-varnames"]) == 4
        for value in prop["enum"]:
            assert f"{value} " in prop["description"], (model, field, value)
    assert schemas["NotifyTaskOut"]["properties"]["type"]["enum"] == [
        "team.completed", "team.failed", "order.closed", "order.refunded",
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
    assert {"E0105", "E0106", "E0108", "E0112", "E0113"} <= set(_codes(settle, "409"))
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
        assert (error.http_status, error.code) in declared, error.__name__
