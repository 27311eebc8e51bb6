"""The envelope every answer wears, error translation, request ids and the access log."""

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import errors
from ..db import one_line, unavailable
from ..logs import request_id
from .jsonenc import dumps

log = logging.getLogger("groupbuy_async.web")
access_log = logging.getLogger("groupbuy_async.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def envelope(
    data: Any, code: str = "0000", info: str = "success", status: int = 200
) -> web.Response:
    if isinstance(data, BaseModel):
        data = data.model_dump(by_alias=True)
    elif isinstance(data, list):
        data = [d.model_dump(by_alias=True) if isinstance(d, BaseModel) else d for d in data]
    return web.Response(
        text=dumps({"code": code, "info": info, "data": data}),
        status=status,
        content_type="application/json",
    )


# The HTTP status of every error, by the first class of its MRO listed here: the one table
# from a domain error to how the API answers it.
HTTP_STATUS: dict[type[errors.ServiceError], int] = {
    errors.ServiceError: 500,
    errors.BadInput: 400,
    errors.BodyTooLarge: 413,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.UniqueConflict: 409,
    errors.Rejected: 409,
    errors.EventNotRetained: 410,
    errors.DatabaseUnavailable: 503,
}
# Seconds a client should wait before retrying a 503 (its Retry-After header).
RETRY_AFTER_SECONDS = 2


def http_status(error: type[errors.ServiceError] | errors.ServiceError) -> int:
    kind = error if isinstance(error, type) else type(error)
    return next(HTTP_STATUS[k] for k in kind.__mro__ if k in HTTP_STATUS)


def error_response(exc: errors.ServiceError) -> web.Response:
    response = envelope(None, code=exc.code, info=exc.info, status=http_status(exc))
    if isinstance(exc, errors.DatabaseUnavailable):
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


# Why this request found the database unavailable, for its access log line. Set by the
# middleware for an error, or by a view answering 503 itself (/readyz).
UNAVAILABLE = web.RequestKey("unavailable", str)


def validation_info(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class _Violation:
    error: type[errors.ServiceError]
    # str.format()ted with the violating key's columns, e.g. {discount_id}.
    message: str
    # When the key cannot be read from the error's detail.
    fallback: str


# Violations by the row being written (a reference to something missing, a duplicate), by
# constraint name. A delete or key change refused because something still refers to the row
# raises the same foreign-key error: the catalog, which knows what it deleted, translates those.
_CONSTRAINTS = {
    "activity_discount_fkey": _Violation(
        errors.BadInput, "discountId {discount_id} does not exist", "discountId does not exist"
    ),
    "binding_sku_fkey": _Violation(
        errors.BadInput,
        "goods: goodsId {goods_id} has no SKU under source {source} and channel {channel}",
        "goods: a goodsId has no SKU under the given source and channel",
    ),
    "sc_sku_activity_source_channel_goods_id_key": _Violation(
        errors.UniqueConflict,
        "goods: goodsId {goods_id} under source {source} and channel {channel} is already in"
        " another activity",
        "goods: a goods item is already in another activity",
    ),
    "team_activity_fkey": _Violation(
        errors.ActivityNotFound, "activityId {activity_id} does not exist", "activity not found"
    ),
}

# Unknown constraints: a generic message that names no table, column or constraint.
_GENERIC: tuple[tuple[type[Exception], type[errors.ServiceError], str], ...] = (
    (asyncpg.ForeignKeyViolationError, errors.BadInput, "refers to something that does not exist"),
    (asyncpg.RestrictViolationError, errors.StillReferenced, "still referenced"),
    (asyncpg.UniqueViolationError, errors.UniqueConflict, "already exists"),
    (asyncpg.NotNullViolationError, errors.BadInput, "a required value is missing"),
)

# PostgreSQL's detail: Key (goods_id, source, channel)=(g1, s01, c01) is not present in ...
_KEY = re.compile(r"^Key \((?P<columns>[^()]+)\)=\((?P<values>.*)\) ")


def key_of(detail: str | None) -> dict[str, str]:
    """The violating key's columns and values, or {} when the detail does not say."""
    match = _KEY.match(detail or "")
    if match is None:
        return {}
    columns, values = match["columns"].split(", "), match["values"].split(", ")
    return dict(zip(columns, values, strict=True)) if len(columns) == len(values) else {}


def constraint_error(exc: asyncpg.IntegrityConstraintViolationError) -> errors.ServiceError:
    known = _CONSTRAINTS.get(exc.constraint_name or "")
    if known is not None:
        try:
            return known.error(known.message.format_map(key_of(exc.detail)))
        except KeyError:
            return known.error(known.fallback)
    for kind, error, message in _GENERIC:
        if isinstance(exc, kind):
            return error(message)
    return errors.BadInput("violates a rule of the data")


def translate(exc: Exception) -> errors.ServiceError | None:
    """Known failures as service errors; None for the unexpected."""
    if isinstance(exc, errors.ServiceError):
        return exc
    if isinstance(exc, ValidationError):
        return errors.BadInput(validation_info(exc))
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return constraint_error(exc)
    if unavailable(exc):
        return errors.DatabaseUnavailable()
    return None


# What aiohttp itself answers (no route, a method the path lacks, a body over the limit).
_HTTP_ERRORS: dict[int, type[errors.ServiceError]] = {
    http_status(e): e
    for e in (errors.Unauthorized, errors.NotFound, errors.MethodNotAllowed, errors.BodyTooLarge)
}


@web.middleware
async def envelope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    token = request_id.set(rid[:64])
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                status = exc.status  # a redirect: passed on as it is, logged as such
                raise
            response = _http_error(exc)
        except Exception as exc:
            response = _failure(request, exc)
        response.headers["X-Request-Id"] = rid
        status = response.status
        return response
    finally:
        _log_access(request, status, started, rid[:64])
        request_id.reset(token)


def _http_error(exc: web.HTTPException) -> web.Response:
    code = _HTTP_ERRORS.get(exc.status, errors.BadInput).code
    response = envelope(None, code=code, info=exc.reason, status=exc.status)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def _failure(request: web.Request, exc: Exception) -> web.Response:
    known = translate(exc)
    if known is None:
        log.exception(
            "unexpected error on %s %s",
            request.method,
            request.path,
            extra={"query": request.query_string},
        )
        known = errors.ServiceError()
    elif isinstance(known, errors.DatabaseUnavailable):
        # Said once, on the access line: an outage fails many requests, each one line.
        request[UNAVAILABLE] = one_line(exc)
    return error_response(known)


def _log_access(request: web.Request, status: int, started: float, rid: str) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    reason = request.get(UNAVAILABLE)
    line = (request.method, request.path, status, elapsed_ms)
    extra = {"request_id": rid}
    if reason is None:
        access_log.info("%s %s %s %.1fms", *line, extra=extra)
    else:
        access_log.warning("%s %s %s %.1fms: database unavailable: %s", *line, reason, extra=extra)
