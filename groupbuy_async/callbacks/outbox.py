"""The notify_task outbox: `enqueue`, the trade side's only way in, inside the transaction
of the state change it reports. Delivering what it holds is claims.py's."""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from ..db import Conn
from . import events
from .events import Event, EventType

# Exactly once per state change: the unique index is one per (type, team) for team events
# and one per (type, order) for order events; a second enqueue of the same is a no-op.
_ENQUEUE = """
INSERT INTO notify_task (event_id, event_type, activity_id, team_id, order_id, notify_url,
                         parameter_json)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                     $7::text[])
ON CONFLICT (event_type, (coalesce(order_id, team_id))) DO NOTHING
RETURNING event_id
"""


async def enqueue(conn: Conn, items: Sequence[Event]) -> list[str]:
    """Write events to the outbox. Call it inside the transaction of the state change they
    report: they commit with it or not at all. Returns the ids of those newly written."""
    if not items:
        return []
    created = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in items]
    bodies = [
        events.body(e.type, str(event_id), created, e.data)
        for e, event_id in zip(items, ids, strict=True)
    ]
    rows = await conn.fetch(
        _ENQUEUE,
        ids,
        [str(e.type) for e in items],
        [e.activity_id for e in items],
        [e.team_id for e in items],
        [e.order_id for e in items],
        [e.notify_url for e in items],
        bodies,
    )
    return [str(r["event_id"]) for r in rows]


async def enqueue_team_completed(
    conn: Conn, team_id: str, activity_id: int, notify_url: str, out_trade_nos: list[str]
) -> None:
    """A completed team's callback (team.completed), one per team."""
    data = {"teamId": team_id, "outTradeNoList": out_trade_nos, "activityId": activity_id}
    await enqueue(conn, [Event(EventType.TEAM_COMPLETED, team_id, activity_id, notify_url, data)])
