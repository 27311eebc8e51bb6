"""A merchant's endpoints: where its events are delivered, which types and pairs each takes,
and the secret each is signed with (sealed at rest, shown once: on creation or rotation)."""

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from .. import errors
from ..callbacks.rules import BrokerTarget, url_problem
from ..db import columns
from .accounts import Pair
from .secret_box import SecretBox, new_secret, signing_key


@dataclass(frozen=True)
class EndpointSpec:
    """What the operator (or merchant) says of an endpoint: a url (kind http), or an
    exchange and routing key on the operator's broker (kind amqp, url '')."""

    url: str
    event_types: tuple[str, ...] = ()
    channels: tuple[Pair, ...] = ()
    disabled: bool = False
    description: str = ""
    secret: str | None = None  # only when creating it; None: generate one
    kind: str = "http"  # or "amqp"
    exchange: str | None = None  # kind amqp: '' the default exchange
    routing_key: str | None = None  # kind amqp


@dataclass(frozen=True)
class Endpoint:
    merchant_id: str
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]
    channels: tuple[Pair, ...]
    disabled: bool
    description: str
    create_time: datetime
    update_time: datetime
    # Until when the secret before the last rotation still signs; None: it does not.
    previous_secret_until: datetime | None
    disabled_reason: str | None = None  # set when the service disabled it
    disabled_time: datetime | None = None
    secret: str | None = None  # in the answer that creates it only
    kind: str = "http"
    broker: BrokerTarget | None = None  # kind amqp


class MerchantNotFound(errors.NotFound):
    info = "merchant not found"


class EndpointNotFound(errors.NotFound):
    info = "endpoint not found"


_COLUMNS = """merchant_id, endpoint_id, url, event_types, channels, disabled, description,
    create_time, update_time, disabled_reason, disabled_time, kind, exchange, routing_key,
    CASE WHEN previous_until > now() THEN previous_until END AS previous_secret_until"""

# Created with the secret given, or updated (never its secret): (xmax = 0) tells which.
_PUT = f"""
INSERT INTO endpoint (merchant_id, endpoint_id, url, event_types, channels, disabled,
                      description, secret, disabled_time, kind, exchange, routing_key)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, CASE WHEN $6 THEN now() END, $10, $11, $12)
ON CONFLICT (merchant_id, endpoint_id) DO UPDATE
SET url = EXCLUDED.url, event_types = EXCLUDED.event_types, channels = EXCLUDED.channels,
    disabled = EXCLUDED.disabled, description = EXCLUDED.description, kind = EXCLUDED.kind,
    exchange = EXCLUDED.exchange, routing_key = EXCLUDED.routing_key, update_time = now(),
    -- Enabled (again): healthy until it fails; its held deliveries are due (_UNHOLD).
    disabled_time = CASE WHEN NOT EXCLUDED.disabled THEN NULL
                         ELSE coalesce(endpoint.disabled_time, now()) END,
    disabled_reason = CASE WHEN EXCLUDED.disabled THEN endpoint.disabled_reason END,
    failing_since = CASE WHEN EXCLUDED.disabled THEN endpoint.failing_since END,
    failed_attempts = CASE WHEN EXCLUDED.disabled THEN endpoint.failed_attempts ELSE 0 END
WHERE NOT $9::boolean
RETURNING {_COLUMNS}, id, (xmax = 0) AS created
"""

# A disabled endpoint's open deliveries are held (4): kept, never claimed, not attempts; once
# it is enabled again they are due at once (from where their schedule stood).
_HOLD = """
UPDATE notify_task SET notify_status = 4, update_time = now()
WHERE endpoint = $1 AND notify_status IN (0, 2)
"""
_UNHOLD = """
UPDATE notify_task SET notify_status = 2, next_attempt_at = now(), update_time = now()
WHERE endpoint = $1 AND notify_status = 4
"""

# The merchant's row is locked (shared) while its pairs are read: a concurrent change of its
# bindings (put_merchant updates that row first) waits for this put, or this one for it.
_MERCHANT_PAIRS = """
SELECT ARRAY(SELECT source || '/' || channel FROM merchant_binding b
             WHERE b.merchant_id = m.merchant_id) AS pairs
FROM merchant m WHERE m.merchant_id = $1 FOR SHARE
"""


def _endpoint(row: asyncpg.Record, secret: str | None = None) -> Endpoint:
    return Endpoint(
        **columns(row, _ENDPOINT_COLUMNS),
        event_types=tuple(row["event_types"]),
        channels=tuple((c["source"], c["channel"]) for c in json.loads(row["channels"])),
        secret=secret,
        broker=BrokerTarget(row["exchange"], row["routing_key"]) if row["kind"] == "amqp" else None,
    )


_ENDPOINT_COLUMNS = (
    "merchant_id endpoint_id url disabled description create_time update_time"
    " previous_secret_until disabled_reason disabled_time kind"
)


def _destination_problem(spec: EndpointSpec, block_private: bool) -> str | None:
    """Kind http takes a url and no exchange or routing key; kind amqp both of those and no
    url."""
    if spec.kind == "amqp":
        if spec.url:
            return "url: not for kind amqp (it publishes to exchange/routingKey)"
        if spec.exchange is None:
            return "exchange: required for kind amqp"
        return "routingKey: required for kind amqp" if spec.routing_key is None else None
    if spec.kind != "http":
        return "kind: must be http or amqp"
    if spec.exchange is not None or spec.routing_key is not None:
        return f"{'exchange' if spec.exchange is not None else 'routingKey'}: only for kind amqp"
    problem = url_problem(spec.url, block_private)
    return f"url: {problem.removeprefix('invalid notifyUrl: ')}" if problem else None


def check_spec(spec: EndpointSpec, block_private: bool) -> None:
    """Refuse (400, naming the field) what can never be delivered or signed."""
    problem = _destination_problem(spec, block_private)
    if problem:
        raise errors.BadInput(problem)
    if spec.secret is not None:
        try:
            signing_key(spec.secret)
        except ValueError as exc:
            raise errors.BadInput(f"secret: {exc}") from None


async def put_endpoint(
    pool: asyncpg.Pool,
    box: SecretBox,
    merchant_id: str,
    endpoint_id: str,
    spec: EndpointSpec,
    block_private: bool,
) -> Endpoint:
    """Create or replace an endpoint. Its secret is set on creation only (the one given, or
    a new one) and returned then; a secret given for an existing endpoint is refused."""
    check_spec(spec, block_private)
    secret = spec.secret or new_secret()
    channels = json.dumps([{"source": s, "channel": c} for s, c in spec.channels])
    async with pool.acquire() as conn, conn.transaction():
        held = await conn.fetchrow(_MERCHANT_PAIRS, merchant_id)
        if held is None:
            raise MerchantNotFound()
        foreign = [f"{s}/{c}" for s, c in spec.channels if f"{s}/{c}" not in held["pairs"]]
        if foreign:
            raise errors.BadInput(
                f"channels: {', '.join(foreign)} not held by merchant {merchant_id}"
            )
        row = await conn.fetchrow(
            _PUT, merchant_id, endpoint_id, spec.url, list(spec.event_types), channels,
            spec.disabled, spec.description, box.seal(secret), spec.secret is not None,
            spec.kind, spec.exchange, spec.routing_key,
        )  # fmt: skip
        if row is not None:
            await conn.execute(_HOLD if spec.disabled else _UNHOLD, row["id"])
    if row is None:
        raise errors.BadInput(
            "secret: can be given only when creating an endpoint; rotate it with"
            " POST …/secret/rotate"
        )
    return _endpoint(row, secret if row["created"] else None)


async def _one(pool: asyncpg.Pool, sql: str, merchant_id: str, endpoint_id: str) -> Endpoint:
    row = await pool.fetchrow(sql, merchant_id, endpoint_id)
    if row is None:
        raise EndpointNotFound()
    return _endpoint(row)


_THE_ENDPOINT = "merchant_id = $1 AND endpoint_id = $2"


async def get_endpoint(pool: asyncpg.Pool, merchant_id: str, endpoint_id: str) -> Endpoint:
    sql = f"SELECT {_COLUMNS} FROM endpoint WHERE {_THE_ENDPOINT}"
    return await _one(pool, sql, merchant_id, endpoint_id)


async def list_endpoints(pool: asyncpg.Pool, merchant_id: str) -> list[Endpoint]:
    """A merchant's endpoints in endpointId order (MerchantNotFound for no such merchant)."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM endpoint WHERE merchant_id = $1 ORDER BY endpoint_id",
        merchant_id,
    )
    if not rows and not await pool.fetchval(
        "SELECT EXISTS (SELECT FROM merchant WHERE merchant_id = $1)", merchant_id
    ):
        raise MerchantNotFound()
    return [_endpoint(r) for r in rows]


async def delete_endpoint(pool: asyncpg.Pool, merchant_id: str, endpoint_id: str) -> Endpoint:
    """Delete an endpoint with its deliveries (their events stay in the feed)."""
    sql = f"DELETE FROM endpoint WHERE {_THE_ENDPOINT} RETURNING {_COLUMNS}"
    return await _one(pool, sql, merchant_id, endpoint_id)


@dataclass(frozen=True)
class Rotated:
    secret: str
    previous_secret_until: datetime | None


async def rotate_secret(
    pool: asyncpg.Pool, box: SecretBox, merchant_id: str, endpoint_id: str, grace: timedelta
) -> Rotated:
    """A new secret; the one it replaces keeps signing (beside it) for `grace`. A rotation
    within the grace of the last one drops the secret before that one."""
    secret = new_secret()
    row = await pool.fetchrow(
        "UPDATE endpoint SET previous_secret = secret, secret = $3,"
        " previous_until = now() + $4::interval, update_time = now()"
        " WHERE merchant_id = $1 AND endpoint_id = $2"
        " RETURNING CASE WHEN previous_until > now() THEN previous_until END AS until",
        merchant_id, endpoint_id, box.seal(secret), grace,
    )  # fmt: skip
    if row is None:
        raise EndpointNotFound()
    return Rotated(secret, row["until"])


class EndpointUrls:
    """What a lock's notifyUrl may name: the urls of each merchant's enabled (http) endpoints, read
    at most once per CACHE_SECONDS per merchant and process (a lock costs no extra round trip;
    an endpoint created, enabled or disabled counts within that). One per process."""

    CACHE_SECONDS = 2.0
    _MAX = 10_000

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._known: dict[str, tuple[float, frozenset[str]]] = {}

    async def check(self, merchant_id: str, url: str) -> None:
        """BadInput (0002, naming notifyUrl) unless `url` is one of them."""
        now = time.monotonic()
        cached = self._known.get(merchant_id)
        if cached is None or cached[0] <= now or url not in cached[1]:
            # Unknown urls are looked up again: a new endpoint is nameable at once.
            rows = await self.pool.fetch(
                "SELECT url FROM endpoint"
                " WHERE merchant_id = $1 AND NOT disabled AND kind = 'http'",
                merchant_id,
            )
            if len(self._known) >= self._MAX:
                self._known.clear()
            cached = (now + self.CACHE_SECONDS, frozenset(r["url"] for r in rows))
            self._known[merchant_id] = cached
        if url not in cached[1]:
            raise errors.BadInput(
                f"notifyUrl: not the url of an enabled endpoint of merchant {merchant_id}"
                " (create one: PUT /api/v1/admin/merchants/{merchantId}/endpoints/{endpointId})"
            )


async def signing_keys_at(pool: asyncpg.Pool, box: SecretBox, path: str) -> list[bytes]:
    """The signing keys of every enabled endpoint whose url ends in `path` (what a receiver
    served by this process, the demo's mock merchant, verifies with)."""
    rows = await pool.fetch(
        "SELECT secret, CASE WHEN previous_until > now() THEN previous_secret END AS previous"
        " FROM endpoint WHERE NOT disabled AND kind = 'http' AND right(url, length($1)) = $1",
        path,
    )
    return [box.open_key(s) for r in rows for s in (r["secret"], r["previous"]) if s is not None]


@dataclass(frozen=True)
class SendTarget:
    url: str  # '' for a broker endpoint
    secrets: tuple[bytes, ...]  # sealed: the current one, and the previous while in grace
    broker: BrokerTarget | None = None  # kind amqp


async def send_target(pool: asyncpg.Pool, merchant_id: str, endpoint_id: str) -> SendTarget:
    """Where an endpoint's sends go and what signs them (a ping's)."""
    row = await pool.fetchrow(
        "SELECT url, secret, CASE WHEN previous_until > now() THEN previous_secret END AS prev,"
        f" kind, exchange, routing_key FROM endpoint WHERE {_THE_ENDPOINT}",
        merchant_id,
        endpoint_id,
    )
    if row is None:
        raise EndpointNotFound()
    sealed = (row["secret"],) if row["prev"] is None else (row["secret"], row["prev"])
    broker = BrokerTarget(row["exchange"], row["routing_key"]) if row["kind"] == "amqp" else None
    return SendTarget(row["url"], sealed, broker)
