"""Every answer a test gets from an app is one that the app's OpenAPI document declares for its
operation: the HTTP status, and for an enveloped answer its code (each error response's `code`
is an enum of the codes that operation can answer). The suite's tests drive the business paths
a fuzzer cannot reach (a full team, a late payment, …), so an error a route raises without
declaring it fails the test that provoked it."""

import json
from typing import Any

from aiohttp import web

from groupbuy_async import errors
from groupbuy_async.http.openapi import build_openapi
from groupbuy_async.http.routing import ROUTE_TABLE

# Answers outside the contract, since the last check (every watched app adds to it).
VIOLATIONS: list[str] = []

# What a request that matches no operation is answered: no such path, or not that method.
_UNROUTED = {404: errors.NotFound.code, 405: errors.MethodNotAllowed.code}


def watch(app: web.Application) -> None:
    """Check each of the app's answers against its contract (before the app starts)."""
    app.on_response_prepare.append(_check)


async def _check(request: web.Request, response: web.StreamResponse) -> None:
    problem = _problem(request, response)
    if problem:
        VIOLATIONS.append(f"{request.method} {request.path} -> {response.status}: {problem}")


def _problem(request: web.Request, response: web.StreamResponse) -> str | None:
    if request.method == "HEAD":  # answered as GET, without a body
        return None
    code = _code_of(response)
    resource = request.match_info.route.resource
    operation = None
    if resource is not None:
        paths = build_openapi(request.app[ROUTE_TABLE])["paths"]
        operation = paths.get(resource.canonical, {}).get(request.method.lower())
    if operation is None:
        expected = _UNROUTED.get(response.status)
        if expected is None or code != expected:
            return f"no operation, and not {_UNROUTED} (code {code})"
        return None
    declared = operation["responses"].get(str(response.status))
    if declared is None:
        return f"status not declared for {operation['operationId']}"
    schema = declared.get("content", {}).get("application/json", {}).get("schema", {})
    codes = schema.get("properties", {}).get("code", {}).get("enum")
    if codes is not None and code not in codes:
        return f"code {code} not declared for {operation['operationId']} ({codes})"
    return None


def _code_of(response: web.StreamResponse) -> Any:
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return None
    try:
        body = json.loads(response.text or "null")
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None
