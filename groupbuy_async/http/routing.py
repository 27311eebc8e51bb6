"""The route table type and how a route becomes an aiohttp handler (admin check, body and
query validation, the envelope)."""

import hmac
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from .. import errors
from ..bootstrap import SERVICES
from ..merchants.keys import Principal
from .envelope import Handler, envelope, http_status
from .schemas import PATH_PARAMS

View = Callable[[web.Request, Any], Awaitable[Any]]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def to_domain(kind: Callable[..., T], body: BaseModel) -> T:
    """A validated body as the domain's command of the same field names."""
    return kind(**dict(body))


def to_wire(model: type[M], value: object) -> M:
    """A domain result in its JSON form, validated as the model says (nested ones too)."""
    return model.model_validate(value, from_attributes=True)


def attributes(value: object, names: str) -> dict[str, Any]:
    """`value`'s attributes of these (space-separated) names, as keyword arguments for a model
    whose fields are named like them."""
    return {name: getattr(value, name) for name in names.split()}


Raises = tuple[type[errors.ServiceError] | errors.ServiceError, ...]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    view: View
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    response: Any = None
    admin: bool = False
    # Shop API: a merchant's key (Authorization: Bearer gbk_…); the view reads principal().
    merchant: bool = False
    # A query-string model (GET routes): validated and handed to the view like a body.
    query: type[BaseModel] | None = None
    # Raw views build their own web.Response (not enveloped), of this content type.
    raw: str | None = None
    # What its view can raise (a class, or an instance whose info is a refusal worth naming);
    # declared_errors() adds what every route of its kind can answer. OpenAPI lists them all.
    raises: Raises = ()
    # Reads PostgreSQL: answers 503 (0503, Retry-After) while it is unavailable.
    database: bool = True
    # Answers 503 (0503) itself, with its data (not null), when a dependency is down.
    degraded: bool = False


def documented(
    method: str,
    path: str,
    view: View,
    body: type[BaseModel] | None,
    response: Any,
    *,
    tag: str,
    admin: bool = False,
    merchant: bool = False,
    query: type[BaseModel] | None = None,
    raises: Raises = (),
) -> Route:
    """A route whose summary (in OpenAPI) is its view's docstring."""
    summary = inspect.getdoc(view) or ""
    return Route(
        method, path, view, summary, tag, body, response, admin, merchant, query, raises=raises
    )


@dataclass(frozen=True)
class Answer:
    """One error a route can answer: its status, code and what it means."""

    http_status: int
    code: str
    info: str


def declared_errors(route: Route) -> list[Answer]:
    """Every error the route can answer: status, code and meaning, without repeats."""
    kinds: list[type[errors.ServiceError] | errors.ServiceError] = [errors.ServiceError]
    if route.body is not None or route.query is not None or "{" in route.path:
        kinds.append(errors.BadInput)
    if route.body is not None:
        kinds.append(errors.BodyTooLarge)
    if route.admin or route.merchant:
        kinds.append(errors.Unauthorized)
    if route.database or route.degraded:
        kinds.append(errors.DatabaseUnavailable)
    answers: list[Answer] = []
    for kind in (*kinds, *route.raises):
        answer = Answer(http_status(kind), kind.code, kind.info)
        if answer not in answers:
            answers.append(answer)
    return answers


_PATH_ADAPTERS = {name: TypeAdapter(kind) for name, kind in PATH_PARAMS.items()}


def path_param(request: web.Request, name: str) -> Any:
    try:
        return _PATH_ADAPTERS[name].validate_python(request.match_info[name], strict=False)
    except ValidationError as exc:
        raise errors.BadInput(f"{name}: {exc.errors()[0]['msg']}") from None


def require_admin(request: web.Request) -> None:
    require_bearer(request, request.app[SERVICES].settings.admin_secret, "admin", "ADMIN_TOKEN")


def require_bearer(request: web.Request, expected: str | None, what: str, setting: str) -> None:
    """The request's Authorization must be `Bearer <expected>` (compared in constant time);
    with no `expected` configured, what it guards is refused."""
    if not expected:
        raise errors.Unauthorized(f"{what} is disabled: GROUPBUY_{setting} is not set")
    given = request.headers.get("Authorization", "")
    try:
        given_bytes = given.encode()
    except UnicodeError:  # a header that is not valid UTF-8 cannot be the token
        raise errors.Unauthorized() from None
    if not hmac.compare_digest(given_bytes, f"Bearer {expected}".encode()):
        raise errors.Unauthorized()


PRINCIPAL = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    """The merchant of the request's API key (routes with merchant=True)."""
    return request[PRINCIPAL]


def require_pair(request: web.Request, source: str, channel: str) -> Principal:
    """The request's merchant, which must hold source+channel: 403 (0403) otherwise."""
    who = request[PRINCIPAL]
    if (source, channel) not in who.pairs:
        raise errors.Forbidden(
            f"source+channel {source}/{channel} is not held by merchant {who.merchant_id}"
        )
    return who


def _endpoint(route: Route) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if route.admin:
            require_admin(request)
        if route.merchant:
            keys = request.app[SERVICES].keys
            request[PRINCIPAL] = await keys.principal(request.headers.get("Authorization"))
        body: BaseModel | None = None
        if route.body is not None:
            # No body at all is an empty object: a model whose fields are optional accepts it,
            # any other names its missing fields.
            body = route.body.model_validate_json(await request.read() or b"{}")
        elif route.query is not None:
            # Query strings are all text: numbers in them are parsed, not typed.
            body = route.query.model_validate(dict(request.query), strict=False)
        result = await route.view(request, body)
        if isinstance(result, web.StreamResponse):
            return result
        return envelope(result)

    return handle


def add_routes(app: web.Application, routes: list[Route]) -> None:
    for route in routes:
        if route.method == "GET":  # HEAD too, as HTTP expects of every GET
            app.router.add_get(route.path, _endpoint(route), allow_head=True)
        else:
            app.router.add_route(route.method, route.path, _endpoint(route))


ROUTE_TABLE = web.AppKey("route_table", list[Route])
