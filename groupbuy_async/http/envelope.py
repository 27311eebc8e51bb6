"""The envelope every answer wears, error translation, request ids and the access log."""

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import errors
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


def error_response(exc: errors.ServiceError) -> web.Response:
    return envelope(None, code=exc.code, info=exc.info, status=exc.http_status)


def validation_info(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def translate(exc: Exception) -> errors.ServiceError | None:
    """Known failures as service errors; None for the unexpected."""
    if isinstance(exc, errors.ServiceError):
        return exc
    if isinstance(exc, ValidationError):
        return errors.BadInput(validation_info(exc))
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return errors.BadInput(f"refers to something that does not exist: {exc.detail or exc}")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return errors.UniqueConflict(f"unique index conflict: {exc.detail or exc}")
    if isinstance(exc, asyncpg.CheckViolationError):
        return errors.BadInput(f"violates a rule of the data: {exc.constraint_name}")
    return None


_HTTP_CODES = {401: "0401", 404: "0404", 405: "0405", 413: "0002"}


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
            response = envelope(
                None, code=_HTTP_CODES.get(exc.status, "0002"), info=exc.reason, status=exc.status
            )
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception as exc:
            known = translate(exc)
            if known is None:
                log.exception(
                    "unexpected error on %s %s", request.method, request.path,
                    extra={"query": request.query_string},
                )  # fmt: skip
                known = errors.ServiceError()
            response = error_response(known)
        response.headers["X-Request-Id"] = rid
        status = response.status
        return response
    finally:
        access_log.info(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            status,
            (time.perf_counter() - started) * 1000,
            extra={"request_id": rid[:64]},
        )
        request_id.reset(token)
