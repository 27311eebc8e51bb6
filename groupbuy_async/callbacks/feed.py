"""The event feed: every event in an order a reader can page through without ever missing
one that commits late."""

import uuid
from dataclasses import dataclass

import asyncpg

from .views import EVENT_STATUS

# The feed is ordered by (xact_id, id): the writing transaction's id (sql/007, sql/010), then the
# insert order within it. It lists only events written by transactions below the horizon:
# the oldest transaction of this database still open when the statement's snapshot was
# taken (or, with none open, the first not yet started). Every transaction below it has
# ended, so every event that will ever have a position below it is committed and in this
# snapshot: a reader who has read up to a position can never find an event appear behind
# it later, whatever order transactions commit in. An open transaction holds the feed back
# (never skips it) until it ends. Transactions still open in other databases of the server
# cannot write here and do not hold it back; one whose database is not known (it ended
# between the snapshot and the activity read, or is prepared) is counted as this one's.
_HORIZON = """
SELECT least(pg_snapshot_xmax(s), (
    SELECT min(x) FROM pg_snapshot_xip(s) AS x
    WHERE NOT EXISTS (SELECT FROM pg_stat_activity a
                      WHERE a.backend_xid = xid(x) AND a.datname <> current_database())))
FROM pg_current_snapshot() AS s
"""
_EVENT_COLUMNS = f"""e.event_id, e.event_type, e.team_id, e.order_id, e.create_time,
    e.parameter_json, {EVENT_STATUS} AS notify_status"""


@dataclass(frozen=True)
class FeedPosition:
    xact_id: int
    id: int


FEED_START = FeedPosition(0, 0)


async def feed_position(pool: asyncpg.Pool, event_id: uuid.UUID) -> FeedPosition | None:
    """Where an event stands in the feed; None if there is no such event."""
    row = await pool.fetchrow("SELECT xact_id, id FROM event WHERE event_id = $1", event_id)
    return None if row is None else FeedPosition(row["xact_id"], row["id"])


async def list_events(
    pool: asyncpg.Pool,
    after: FeedPosition,
    *,
    event_type: str | None = None,
    team_id: str | None = None,
    limit: int = 100,
) -> list[asyncpg.Record]:
    """Up to `limit` events past `after` in feed order, each with its body as sent."""
    args: list[object] = [after.xact_id, after.id, limit]
    where = ["xact_id < (SELECT * FROM horizon)", "(xact_id, id) > ($1::xid8, $2)"]
    scope = "event e"
    if event_type is not None:
        args.append(event_type)
        where.append(f"event_type = ${len(args)}")
    if team_id is not None:
        # A team has a handful of events: found by the team index first, then ordered.
        args.append(team_id)
        scope = f"(SELECT * FROM event WHERE team_id = ${len(args)} OFFSET 0) AS e"
    return await pool.fetch(
        f"WITH horizon AS ({_HORIZON}) SELECT {_EVENT_COLUMNS} FROM {scope}"
        f" WHERE {' AND '.join(where)} ORDER BY xact_id, id LIMIT $3",
        *args,
    )
