"""OpenAPI 3.1 document generated from the route table and its pydantic models."""

import re
from functools import cache
from typing import Any, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema

from .. import __version__, errors
from ..settings import DEFAULT_SCHEDULE
from .event_schemas import WEBHOOKS
from .routing import Answer, Route, declared_errors
from .schemas import PATH_PARAMS

_REF = "#/components/schemas/{model}"
_PATH_SCHEMAS = {name: TypeAdapter(kind).json_schema() for name, kind in PATH_PARAMS.items()}


def _models(routes: list[Route]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = list(WEBHOOKS.values())
    for route in routes:
        for model in (route.body, _inner(route.response)):
            if model is not None and model not in found:
                found.append(model)
    return found


def _inner(response: Any) -> type[BaseModel] | None:
    if get_origin(response) is list:
        (response,) = get_args(response)
    return response if isinstance(response, type) and issubclass(response, BaseModel) else None


def _envelope(data: dict[str, Any], codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "info", "data"],
        "properties": {
            "code": {
                "type": "string",
                "enum": codes,
                "description": '"0000" on success, else the error code (see the API\'s codes)',
            },
            "info": {"type": "string", "description": '"success", or what went wrong'},
            "data": {**data, "description": "The answer; null on error"},
        },
    }


_HEADERS = "#/components/headers/{name}"
_COMPONENT_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "description": "The request's X-Request-Id if it sent one, else a new id: every log line"
        " of the request carries it (its first 64 characters)",
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"$ref": _HEADERS.format(name=name)} for name in ("X-Request-Id", *names)}


def _errors(route: Route) -> dict[str, Any]:
    """A response per HTTP status the route can answer an error with, its codes an enum."""
    by_status: dict[int, list[Answer]] = {}
    for answer in declared_errors(route):
        by_status.setdefault(answer.http_status, []).append(answer)
    responses: dict[str, Any] = {}
    for status, answers in sorted(by_status.items()):
        data = _data_schema(route) if status == 503 and route.degraded else {"type": "null"}
        meanings: dict[str, list[str]] = {}
        for a in answers:
            meanings.setdefault(a.code, []).append(a.info)
        responses[str(status)] = {
            "description": "; ".join(f"{c}: {', or '.join(m)}" for c, m in meanings.items()),
            "headers": _headers("Retry-After") if status == 503 else _headers(),
            "content": {"application/json": {"schema": _envelope(data, list(meanings))}},
        }
    return responses


def _data_schema(route: Route) -> dict[str, Any]:
    model = _inner(route.response)
    if model is None:
        return {}
    ref = {"$ref": _REF.format(model=model.__name__)}
    if get_origin(route.response) is list:
        return {"type": "array", "items": ref}
    return ref


def _parameter(name: str, where: str, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": schema.get("description", ""),
        "schema": schema,
    }


def _operation(route: Route) -> dict[str, Any]:
    params = [
        _parameter(name, "path", True, _PATH_SCHEMAS[name])
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    if route.query is not None:
        schema = route.query.model_json_schema(by_alias=True)
        required = set(schema.get("required", ()))
        params += [
            _parameter(name, "query", name in required, prop)
            for name, prop in schema["properties"].items()
        ]
    success = (
        {"application/json": {"schema": _envelope(_data_schema(route), ["0000"])}}
        if route.raw is None
        else {route.raw: {"schema": {"type": "string" if route.raw == "text/plain" else "object"}}}
    )
    responses: dict[str, Any] = {
        "200": {"description": "success", "headers": _headers(), "content": success},
        **_errors(route),
    }
    op: dict[str, Any] = {
        "operationId": route.view.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": params,
        "responses": responses,
    }
    if route.body is not None:
        # No body at all is read as {}: optional when {} is a valid body (routing._endpoint),
        # not when a field is required, nor when a rule across fields refuses it (an
        # endpoint's url, or its exchange and routing key, per kind).
        op["requestBody"] = {
            "required": not _valid(route.body, {}),
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=route.body.__name__)}}
            },
        }
    if route.admin:
        op["security"] = [{"adminToken": []}]
    elif route.merchant:
        op["security"] = [{"merchantKey": []}]
    elif route.path == "/metrics":
        op["security"] = [{"metricsToken": []}]
    return op


def _valid(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def _header(name: str, required: bool, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


# What the service sends to a merchant (callbacks/sender.py) and how it reads the answer
# (callbacks/rules.py): Standard Webhooks headers, the outbox's payload, `success` expected.
def _webhook(event_type: str, model: type[BaseModel]) -> dict[str, Any]:
    first, *rest = event_type.split(".")
    return {
        **_EVERY_EVENT,
        "operationId": first + "".join(part.title() for part in rest),
        "summary": f"{event_type}: {(model.__doc__ or '').strip()}",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}
            },
        },
    }


_EVERY_EVENT: dict[str, Any] = {
    "description": (
        "POSTed to the notifyUrl of the order that opened the team, after the state change"
        " commits (each event once per state change: one per team for team.*, one per order"
        " for order.*), then retried"
        f" on GROUPBUY_NOTIFY_RETRY_SCHEDULE (default {DEFAULT_SCHEDULE}; +-20 % jitter) until"
        " the merchant answers 2xx with the body `success`. Every attempt carries the same"
        " body and webhook-id. Headers follow Standard Webhooks"
        " (https://www.standardwebhooks.com/): verify with any of its libraries, e.g."
        " standardwebhooks.Webhook(secret).verify(body, headers)."
    ),
    "tags": ["callbacks"],
    "parameters": [
        _header(
            "webhook-id",
            True,
            "The event id (eventId in the body): identical on every retry, deduplicate on it",
        ),
        _header(
            "webhook-timestamp",
            True,
            "When this attempt was signed, in integer Unix seconds; refuse stale ones",
        ),
        _header(
            "webhook-signature",
            True,
            "`v1,` + base64 of HMAC-SHA256, keyed with the base64-decoded secret of the"
            " endpoint (whsec_ + base64), over `{webhook-id}.{webhook-timestamp}.{raw body}`;"
            " while a rotation's grace lasts two are listed, space-separated (new, then old):"
            " any one that verifies is enough",
        ),
    ],
    "responses": {
        "200": {
            "description": (
                "Received: any 2xx whose body, stripped, is `success` ends delivery (with"
                " GROUPBUY_NOTIFY_ACCEPT_ANY_2XX=true, any 2xx does)"
            ),
            "content": {"text/plain": {"schema": {"type": "string", "const": "success"}}},
        },
        "410": {"description": "Gone: no more attempts (the task goes to status 3 at once)"},
        "429": {"description": "Failed: retried after Retry-After (up to 24 h) if given"},
        "503": {"description": "Failed: retried after Retry-After (up to 24 h) if given"},
        "default": {
            "description": (
                "Anything else (another status or body, a redirect, a timeout, a DNS or"
                " connection error) is a failed attempt, retried per the schedule; when the"
                " last retry fails the task is in error (status 3) until an operator replays it"
            )
        },
    },
}


@cache
def _build(routes: tuple[Route, ...]) -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation") for m in _models(list(routes))], ref_template=_REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    codes = "; ".join(f"{e.code} {e.info}" for e in errors.ALL_ERRORS)
    unrouted = (
        f"A path the API does not have answers 404 ({errors.NotFound.code}); a method a path"
        f" lacks, 405 ({errors.MethodNotAllowed.code}) with Allow."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "groupbuy-async",
            "version": __version__,
            "description": f"Group-buy trading with merchant callbacks. Codes: {codes}. {unrouted}",
        },
        "paths": paths,
        "webhooks": {name: {"post": _webhook(name, model)} for name, model in WEBHOOKS.items()},
        "components": {
            "schemas": schemas.get("$defs", {}),
            "headers": _COMPONENT_HEADERS,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator: GROUPBUY_ADMIN_TOKEN",
                },
                "merchantKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "gbk_ + 43 characters",
                    "description": "A merchant's API key (POST /api/v1/admin/merchants/"
                    "{merchantId}/keys): the requests of the shop API",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "What Prometheus sends for /metrics: GROUPBUY_METRICS_TOKEN",
                },
            },
        },
    }


def build_openapi(routes: list[Route]) -> dict[str, Any]:
    return _build(tuple(routes))
