"""The notify_task outbox: `enqueue`, the trade side's only way in, inside the transaction
of the state change it reports; `writing_events` for a statement that makes its events in
SQL (the close cron's), with the same fan-out and bodies byte for byte `events.body`'s.
Delivering what the outbox holds is claims.py's."""

from collections.abc import Sequence
from datetime import UTC, datetime

from ..db import Conn
from . import events
from .events import Event, EventType

# Exactly once per state change: the unique index is one per (type, team) for team events
# and one per (type, order) for order events; a second write of the same is a no-op. The
# same statement writes the event's deliveries: one per enabled endpoint of its merchant (the
# holder of its order's pair, or its team's) that takes its type and pair; a team whose lock
# named a notifyUrl (`pin`) has its events delivered to the endpoints at that url only.
# It starts from a CTE `e` of (event_id, event_type, activity_id, team_id, order_id, pin,
# body, n), n the order they are written in.
_FAN_OUT = """placed AS (
    SELECT e.*, coalesce(o.source, t.source) AS source, coalesce(o.channel, t.channel) AS channel
    FROM e LEFT JOIN group_buy_order t ON t.team_id = e.team_id
    LEFT JOIN group_buy_order_list o ON o.order_id = e.order_id
), written AS (
    INSERT INTO event (event_id, event_type, activity_id, team_id, order_id, merchant_id,
                       parameter_json)
    SELECT p.event_id, p.event_type, p.activity_id, p.team_id, p.order_id, b.merchant_id, p.body
    FROM placed p LEFT JOIN merchant_binding b ON b.source = p.source AND b.channel = p.channel
    ORDER BY p.n
    ON CONFLICT (event_type, (coalesce(order_id, team_id))) DO NOTHING
    RETURNING event_id, merchant_id
), delivered AS (
    INSERT INTO notify_task (event_id, event_type, activity_id, team_id, order_id, notify_url,
                             host, endpoint)
    SELECT p.event_id, p.event_type, p.activity_id, p.team_id, p.order_id, ep.url,
           ep.merchant_id || '/' || ep.endpoint_id, ep.id
    FROM written w JOIN placed p USING (event_id)
    JOIN endpoint ep ON ep.merchant_id = w.merchant_id AND NOT ep.disabled
    WHERE (cardinality(ep.event_types) = 0 OR p.event_type = ANY (ep.event_types))
      AND (ep.channels = '[]'::jsonb OR ep.channels @> jsonb_build_array(
               jsonb_build_object('source', p.source, 'channel', p.channel)))
      AND (p.pin = '' OR ep.url = p.pin)
)"""

_ENQUEUE = f"""
WITH e AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                         $6::text[], $7::text[]) WITH ORDINALITY
        AS e(event_id, event_type, activity_id, team_id, order_id, pin, body, n)
), {_FAN_OUT}
SELECT event_id FROM written
"""


def writing_events(
    ctes: str, about: str, event_type: EventType, data: Sequence[tuple[str, str]], result: str
) -> str:
    """One statement that changes state and writes an event of `event_type` for each row it
    reports, with its deliveries, as `enqueue` would: `ctes` (a WITH list, without WITH)
    change the state; `about` is a SELECT from them of each event's activity_id, team_id,
    order_id (NULL for a team event), pin ('' for none) and the columns `data` names (each
    key of the body's data and the column it is taken from); `result` is the statement's
    answer. Each event's id is made once (a CTE of its own) and carried by its body."""
    body = body_sql(event_type, [(key, f"a.{column}") for key, column in data], "a.event_id")
    return f"""WITH {ctes}, about AS MATERIALIZED (
    SELECT {NEW_EVENT_ID} AS event_id, s.* FROM ({about}) AS s
), e AS (
    SELECT a.event_id, {_literal(event_type)}::text AS event_type, a.activity_id, a.team_id,
           a.order_id, a.pin, {body} AS body, row_number() OVER () AS n
    FROM about a
), {_FAN_OUT}
{result}"""


# A new event id as events.new_event_id makes them: UUID version 7 (a random version 4 id, its
# first 48 bits the Unix milliseconds, rounded down, its version bits 0100 made 0111).
NEW_EVENT_ID = """encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing
    substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
    FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"""


def iso_timestamp_sql(at: str) -> str:
    """SQL for the text `datetime.isoformat()` makes of the timestamptz `at` in UTC: its
    microseconds only when they are not 0."""
    utc = f"(({at}) AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE to_char({utc}, 'US') "
        f"WHEN '000000' THEN '' ELSE '.' || to_char({utc}, 'US') END || '+00:00'"
    )


# The statement's time, made text once per statement (an uncorrelated subquery).
NOW = f"(SELECT {iso_timestamp_sql('now()')})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def body_sql(
    event_type: EventType, data: Sequence[tuple[str, str]], event_id: str, timestamp: str = NOW
) -> str:
    """SQL for the bytes `events.body` makes: data's members in the order given, each its key
    and the SQL of its value (text or an integer: to_json escapes text as json.dumps does; a
    NULL is null), then eventId, the text of the SQL `event_id`. `timestamp`: SQL of its
    text (NOW, or iso_timestamp_sql of another time)."""
    parts = [_literal(f'{{"type":{events.encode(event_type)},"timestamp":"'), timestamp]
    opening = '","data":{'
    for key, value in data:
        parts += [
            _literal(f"{opening}{events.encode(key)}:"),
            f"coalesce(to_json({value})::text, 'null')",
        ]
        opening = ","
    parts += [_literal(f'{opening}"eventId":"'), f"({event_id})::text", _literal('"}}')]
    return " || ".join(parts)


async def enqueue(conn: Conn, items: Sequence[Event]) -> list[str]:
    """Write events to the outbox. Call it inside the transaction of the state change they
    report: they commit with it or not at all. Returns the ids of those newly written."""
    if not items:
        return []
    timestamp = datetime.now(UTC).isoformat()
    ids = events.new_event_ids(len(items))
    bodies = [
        events.body(e.type, str(event_id), timestamp, e.data)
        for e, event_id in zip(items, ids, strict=True)
    ]
    rows = await conn.fetch(
        _ENQUEUE,
        ids,
        [str(e.type) for e in items],
        [e.activity_id for e in items],
        [e.team_id for e in items],
        [e.order_id for e in items],
        [e.notify_url or "" for e in items],
        bodies,
    )
    return [str(r["event_id"]) for r in rows]


async def enqueue_team_completed(
    conn: Conn, team_id: str, activity_id: int, notify_url: str, out_trade_nos: list[str]
) -> None:
    """A completed team's callback (team.completed), one per team."""
    data = {"teamId": team_id, "outTradeNoList": out_trade_nos, "activityId": activity_id}
    await enqueue(conn, [Event(EventType.TEAM_COMPLETED, team_id, activity_id, notify_url, data)])
