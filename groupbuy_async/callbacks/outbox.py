"""The notify_task outbox: `enqueue`, the trade side's only way in, inside the transaction
of the state change it reports. Delivering what it holds is claims.py's."""

from collections.abc import Sequence
from datetime import UTC, datetime

from ..db import Conn
from . import events
from .events import Event, EventType

# Exactly once per state change: the unique index is one per (type, team) for team events
# and one per (type, order) for order events; a second enqueue of the same is a no-op. The
# same statement writes the event's deliveries: one per enabled endpoint of its merchant (the
# holder of its order's pair, or its team's) that takes its type and pair; a team whose lock
# named a notifyUrl (`pin`) has its events delivered to the endpoints at that url only.
_ENQUEUE = """
WITH e AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                         $6::text[], $7::text[]) WITH ORDINALITY
        AS e(event_id, event_type, activity_id, team_id, order_id, pin, body, n)
), placed AS (
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
)
SELECT event_id FROM written
"""


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
