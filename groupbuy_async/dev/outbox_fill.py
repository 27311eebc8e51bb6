"""A backlog of callbacks written straight to the outbox, set-based (tests and benchmarks):
completed teams, each with its team.completed event and one delivery of it to each endpoint
given by url, or by exchange and routing key for a broker one (made, under a merchant of its
own, when missing)."""

import hashlib
import uuid
from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from ..callbacks.outbox import NEW_EVENT_ID
from ..callbacks.rules import BrokerTarget
from ..merchants.secret_box import SecretBox

FILL_MERCHANT = "outbox-fill"
_ACTIVITY = 1

_SETUP = """
INSERT INTO group_buy_discount (discount_id, discount_name, market_plan, market_expr)
VALUES ('outbox-fill', 'outbox fill', 'ZJ', '1') ON CONFLICT DO NOTHING;
INSERT INTO group_buy_activity (activity_id, activity_name, discount_id, start_time, end_time)
VALUES (1, 'outbox fill', 'outbox-fill', now(), now() + interval '1 day') ON CONFLICT DO NOTHING;
INSERT INTO merchant (merchant_id, name) VALUES ('outbox-fill', 'outbox fill')
ON CONFLICT DO NOTHING;
INSERT INTO merchant_binding (source, channel, merchant_id) VALUES ('fill', 'fill', 'outbox-fill')
ON CONFLICT DO NOTHING;
"""

_ENDPOINT = """
INSERT INTO endpoint (merchant_id, endpoint_id, url, secret, kind, exchange, routing_key)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (merchant_id, endpoint_id) DO UPDATE SET disabled = false, secret = EXCLUDED.secret
RETURNING id
"""

# An endpoint: its url, or the exchange and routing key of a broker endpoint (kind amqp).
Destination = str | BrokerTarget

_FILL = f"""
WITH t AS (
    INSERT INTO group_buy_order (team_id, activity_id, source, channel, original_price,
        deduction_price, pay_price, target_count, complete_count, lock_count, status,
        valid_start_time, valid_end_time, notify_url)
    SELECT $1 || lpad(g::text, 7, '0'), $2, 'fill', 'fill', 100, 20, 80, 1, 1, 1, 1, now(),
           now() + interval '15 minutes', $3
    FROM generate_series(1, $4) g
    RETURNING team_id, activity_id
), e AS (
    INSERT INTO event (event_id, event_type, activity_id, team_id, merchant_id, parameter_json,
                       create_time)
    SELECT id, 'team.completed', activity_id, team_id, $5,
           json_build_object('type', 'team.completed', 'timestamp', now(), 'data',
               json_build_object('teamId', team_id, 'outTradeNoList', json_build_array(),
                                 'activityId', activity_id, 'eventId', id))::text,
           now() - $10::interval
    FROM (SELECT {NEW_EVENT_ID} AS id, * FROM t) AS fresh
    RETURNING event_id, event_type, activity_id, team_id
)
INSERT INTO notify_task (event_id, event_type, activity_id, team_id, notify_url, host, endpoint,
                         next_attempt_at, notify_status, notify_count, last_http_status,
                         create_time, update_time)
SELECT event_id, event_type, activity_id, team_id, ep.url, ep.host, ep.id, now() + $9::interval,
       $11::smallint, CASE WHEN $11 = 1 THEN 1 ELSE 0 END, CASE WHEN $11 = 1 THEN 200 END,
       now() - $10::interval, now() - $10::interval
FROM e CROSS JOIN unnest($6::text[], $7::text[], $8::bigint[]) WITH ORDINALITY
    AS ep(url, host, id, n)
ORDER BY e.team_id, ep.n
RETURNING team_id
"""


def _key(where: Destination) -> str:
    return where if isinstance(where, str) else f"amqp:{where.exchange}/{where.routing_key}"


def endpoint_id_for(where: Destination) -> str:
    return "fill-" + hashlib.sha256(_key(where).encode()).hexdigest()[:16]


def endpoint_host(where: Destination) -> str:
    """The `host` its deliveries are counted by (per-endpoint bounds, fairness, breaker)."""
    return f"{FILL_MERCHANT}/{endpoint_id_for(where)}"


def _url(where: Destination) -> str:
    return where if isinstance(where, str) else ""


def _endpoint_row(where: Destination, box: SecretBox, secret: str) -> tuple[object, ...]:
    """_ENDPOINT's arguments for an endpoint at `where`, signed with `secret`."""
    broker = None if isinstance(where, str) else where
    return (
        FILL_MERCHANT, endpoint_id_for(where), _url(where), box.seal(secret),
        "http" if broker is None else "amqp",
        None if broker is None else broker.exchange,
        None if broker is None else broker.routing_key,
    )  # fmt: skip


async def completed_teams(
    pool: asyncpg.Pool,
    box: SecretBox,
    count: int,
    url: Destination,
    secret: str,
    due_in: timedelta = timedelta(0),
) -> list[str]:
    """`count` completed teams with a due team.completed delivery each to the endpoint at
    `url` (or the broker endpoint publishing there; signed with `secret`), due in `due_in`;
    returns their team ids."""
    return await fanned_out_teams(pool, box, count, [url], secret, due_in)


async def fanned_out_teams(
    pool: asyncpg.Pool,
    box: SecretBox,
    count: int,
    urls: Sequence[Destination],
    secret: str,
    due_in: timedelta = timedelta(0),
    *,
    delivered_ago: timedelta | None = None,
) -> list[str]:
    """`count` completed teams, each with one team.completed event and one delivery of it to
    each endpoint at `urls` (all signed with `secret`), due in `due_in`: count x len(urls)
    deliveries, in team order (a team's in the order of `urls`). With `delivered_ago`, the
    events were written and delivered that long ago instead (a backlog for retention).
    Returns the team ids."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_SETUP)
        endpoints = [
            await conn.fetchval(_ENDPOINT, *_endpoint_row(url, box, secret)) for url in urls
        ]
        team_ids = await conn.fetch(
            _FILL, str(uuid.uuid4().int)[:13], _ACTIVITY, _url(urls[0]), count, FILL_MERCHANT,
            [_url(url) for url in urls], [endpoint_host(url) for url in urls], endpoints, due_in,
            delivered_ago or timedelta(0), 0 if delivered_ago is None else 1,
        )  # fmt: skip
    return sorted({r["team_id"] for r in team_ids})
