"""bench-scale's data (issue 16), set-based: teams and member orders of a history (most
complete, some forming, failed or refunded) or of due locks, events and their deliveries
(most delivered, some retrying later, some in error), with every secondary index and key
dropped while the big tables fill and rebuilt from their own definitions afterwards.

The events are the right size and mix for the plans (types, statuses, ages, transaction ids,
one delivery each), not each one the story of its team: a team's event is its team.completed
(team.failed for a failed team), the rest are order events of the first orders."""

import asyncio
import time
from datetime import timedelta

import asyncpg

from groupbuy_async.db import Conn, create_pool

from .common import BenchFailure
from .trade_paths import CHANNEL, DISCOUNT_ID, GOODS_ID, SOURCE

MERCHANT = "bench"  # shop_headers' merchant: it holds SOURCE/CHANNEL
FILL_ACTIVITIES = 10  # activity ids FIRST_ACTIVITY + 0..9
FIRST_ACTIVITY = 8_000_000
BIG_TABLES = ("group_buy_order", "group_buy_order_list", "event", "notify_task", "notify_attempt")
HISTORY_DAYS = 25  # the history's age: inside the retention the bench prunes with

_ACTIVITIES = f"""
INSERT INTO group_buy_activity (activity_id, activity_name, discount_id, target, status,
                                start_time, end_time)
SELECT {FIRST_ACTIVITY} + a, 'scale fill ' || a, '{DISCOUNT_ID}', 3, 1,
       now() - interval '40 days', now() + interval '2 days'
FROM generate_series(0, {FILL_ACTIVITIES - 1}) a
ON CONFLICT DO NOTHING
"""


# Team g of $2 (ids $1 || g): (g - 1) % 100 below $3 forming, below $4 failed, below $5
# complete with a refund, else complete. Order k of $6 is in team (k - 1) % $2 + 1, so a team
# has $6 / $2 members (one more for the first $6 % $2), all of them its target. Ages spread
# over HISTORY_DAYS, the first oldest; a forming team's window ends in a day, its locks'
# payment deadline at now() + $7 (overdue when negative). Each team's figures from g alone,
# so that the orders need no join to the teams.
def _team_of(g: str) -> str:
    return f"""SELECT $6::bigint / $2 + CASE WHEN {g} <= $6::bigint % $2 THEN 1 ELSE 0 END AS size,
       now() - make_interval(days => {HISTORY_DAYS}) * (1 - {g}::float8 / $2) AS at,
       CASE WHEN ({g} - 1) % 100 < $3 THEN 0 WHEN ({g} - 1) % 100 < $4 THEN 2
            WHEN ({g} - 1) % 100 < $5 THEN 3 ELSE 1 END AS status"""


_TEAMS = f"""
INSERT INTO group_buy_order (team_id, activity_id, source, channel, original_price,
    deduction_price, pay_price, target_count, complete_count, lock_count, status,
    valid_start_time, valid_end_time, notify_url, create_time, update_time)
SELECT $1::text || lpad(g::text, 9, '0'), {FIRST_ACTIVITY} + g % {FILL_ACTIVITIES}, '{SOURCE}',
       '{CHANNEL}', 100, 20, 80, size, CASE WHEN status IN (1, 3) THEN size ELSE 0 END,
       CASE WHEN status = 2 THEN 0 ELSE size END, status, at,
       CASE status WHEN 0 THEN now() + interval '1 day' ELSE at + interval '15 minutes' END, '',
       at, at
FROM generate_series(1, $2::bigint) g CROSS JOIN LATERAL ({_team_of("g")}) t
WHERE $7::interval IS NOT NULL
"""
# Orders: paid in complete teams (the first member of a team with a refund refunded, the last
# the one that completed it), locked in forming ones, closed in failed ones.
_ORDERS = f"""
INSERT INTO group_buy_order_list (user_id, team_id, order_id, activity_id, start_time,
    end_time, goods_id, source, channel, original_price, deduction_price, pay_price, status,
    out_trade_no, out_trade_time, biz_id, completed_team, pay_deadline, refund_type,
    create_time, update_time)
SELECT $1::text || 'u' || k, $1::text || lpad(p.g::text, 9, '0'), ($8::bigint + k)::text, a,
       at - interval '1 day', at + interval '30 days', '{GOODS_ID}', '{SOURCE}', '{CHANNEL}',
       100, 20, 80, o.status, $1::text || 'o' || k, CASE WHEN o.status IN (1, 3) THEN at END,
       CASE WHEN o.status IN (0, 1) THEN a || '_' || $1::text || 'u' || k || '_1' END,
       t.status IN (1, 3) AND m = size - 1,
       CASE WHEN o.status = 0 THEN now() + $7::interval ELSE at + interval '15 minutes' END,
       CASE o.status WHEN 3 THEN 'paid_team' WHEN 2 THEN 'unpaid' END, at, at
FROM generate_series(1, $6::bigint) k
CROSS JOIN LATERAL (SELECT (k - 1) % $2 + 1 AS g, (k - 1) / $2 AS m,
                           {FIRST_ACTIVITY} + ((k - 1) % $2 + 1) % {FILL_ACTIVITIES} AS a) p
CROSS JOIN LATERAL ({_team_of("p.g")}) t
CROSS JOIN LATERAL (SELECT CASE t.status WHEN 0 THEN 0 WHEN 2 THEN 2
                                WHEN 3 THEN CASE WHEN m = 0 THEN 3 ELSE 1 END ELSE 1 END
                           AS status) o
"""

# Event e of $3: the first $2 are team events (of team e), the rest order events (of order
# e - $2; every tenth order.refunded). Event ids md5-derived, so the deliveries, written by
# another connection at the same time, name them without a join. Transaction ids spread
# below $4 (the filling one's): the feed lists them all, before anything written later.
_EVENT_OF = f"""
SELECT e, md5($1::text || e)::uuid AS event_id, at, xact,
       CASE WHEN e <= $2 THEN CASE WHEN (e - 1) % 100 BETWEEN $5 AND $6 - 1 THEN 'team.failed'
                                  ELSE 'team.completed' END
            WHEN (e - $2) % 10 = 0 THEN 'order.refunded' ELSE 'order.closed' END AS event_type,
       CASE WHEN e <= $2 THEN e ELSE (e - $2 - 1) % $2 + 1 END AS g,
       CASE WHEN e > $2 THEN ($7::bigint + e - $2)::text END AS order_id
FROM generate_series(1, $3::bigint) e
CROSS JOIN LATERAL (SELECT now() - make_interval(days => {HISTORY_DAYS}) * (1 - e::float8 / $3) AS at,
                           (1 + (e - 1) * ($4::bigint - 2) / $3)::text::xid8 AS xact) p
"""
_EVENTS = f"""
INSERT INTO event (event_id, event_type, activity_id, team_id, order_id, merchant_id,
                   parameter_json, xact_id, create_time)
SELECT event_id, event_type, {FIRST_ACTIVITY} + g % {FILL_ACTIVITIES}, $1::text || lpad(g::text, 9, '0'),
       order_id, '{MERCHANT}',
       format('{{"type":"%s","timestamp":"%s","data":{{"teamId":"%s","outTradeNoList":'
              '["%so1","%so2","%so3"],"activityId":%s,"eventId":"%s"}}}}', event_type, at,
              $1::text || lpad(g::text, 9, '0'), $1::text, $1::text, $1::text, {FIRST_ACTIVITY} + g % {FILL_ACTIVITIES},
              event_id),
       xact, at
FROM ({_EVENT_OF}) ev
"""
# One delivery each, to endpoint $8: e % 1000 below 5 retrying (due in an hour), below 15 in
# error, the rest delivered.
_DELIVERIES = f"""
INSERT INTO notify_task (event_id, event_type, activity_id, team_id, order_id, notify_url,
    host, endpoint, notify_status, notify_count, next_attempt_at, last_http_status, last_error,
    create_time, update_time)
SELECT event_id, event_type, {FIRST_ACTIVITY} + g % {FILL_ACTIVITIES}, $1::text || lpad(g::text, 9, '0'),
       order_id, ep.url, ep.merchant_id || '/' || ep.endpoint_id, ep.id, s.status,
       CASE s.status WHEN 1 THEN 1 ELSE 8 END,
       CASE s.status WHEN 2 THEN now() + interval '1 hour' ELSE at END,
       CASE s.status WHEN 1 THEN 200 ELSE 503 END,
       CASE WHEN s.status <> 1 THEN 'HTTP 503' END, at, at + interval '2 seconds'
FROM ({_EVENT_OF}) ev JOIN endpoint ep ON ep.id = $8
CROSS JOIN LATERAL (SELECT CASE WHEN e % 1000 < 5 THEN 2 WHEN e % 1000 < 15 THEN 3 ELSE 1 END
                           AS status) s
"""

# The attempt of each delivery (the last one: earlier ones are not what the plans see).
_ATTEMPTS = """
INSERT INTO notify_attempt (task_id, attempt, started_at, duration_ms, http_status, error)
SELECT id, 1, update_time - interval '1 second', 5, last_http_status, last_error
FROM notify_task
"""

# Keys (primary, unique, foreign) on the big tables or referring to them, and their other
# indexes: dropped for the fill, rebuilt from these very definitions.
_KEYS = """
SELECT c.conrelid::regclass::text AS tbl, c.conname AS name, pg_get_constraintdef(c.oid) AS def,
       c.contype
FROM pg_constraint c
WHERE c.contype IN ('p', 'u', 'f')
  AND (c.conrelid::regclass::text = ANY($1) OR c.confrelid::regclass::text = ANY($1))
ORDER BY c.contype = 'f', c.conname
"""
_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
FROM pg_index i
WHERE i.indrelid::regclass::text = ANY($1)
  AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY 1
"""
# What the rebuild must give back, to the letter.
_SCHEMA = """
SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid::regclass::text = ANY($1)
UNION ALL
SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid::regclass::text = ANY($1) OR confrelid::regclass::text = ANY($1)
ORDER BY 1
"""


async def fill_base(pool: asyncpg.Pool) -> None:
    """The fill's activities (both databases have them: the same catalog on both)."""
    await pool.execute(_ACTIVITIES)


async def fill_trades(
    conn: Conn, prefix: str, teams: int, orders: int, mix: tuple[int, int, int],
    deadline: timedelta, first_order: int,
) -> None:  # fmt: skip
    """`teams` teams (ids prefix + 9 digits) holding `orders` orders; `mix`: the percentages
    below which a team is forming, failed, complete with a refund (cumulative); a forming
    team's locks are due at now() + `deadline` (negative: overdue). Order ids from
    `first_order` + 1."""
    args = (prefix, teams, *mix, orders, deadline)
    await conn.execute(_TEAMS, *args)
    await conn.execute(_ORDERS, *args, first_order)


async def fill_outbox(
    conn: Conn, prefix: str, teams: int, events: int, failed: tuple[int, int],
    endpoint: int, first_order: int,
) -> None:  # fmt: skip
    """`events` events of fill_trades' teams and orders, one delivery each to `endpoint`, one
    attempt each."""
    xact = int(await conn.fetchval("SELECT pg_current_xact_id()::text"))
    args = (prefix, teams, events, xact, *failed, first_order)
    await conn.execute(_EVENTS, *args)
    await conn.execute(_DELIVERIES, *args, endpoint)
    await conn.execute(_ATTEMPTS)


async def big_fill(dsn: str, orders: int, endpoint: int) -> dict[str, float]:
    """The history: `orders` orders in 3/10 as many teams (2 % forming, 3 % failed, 5 % with
    a refund), as many events, each with a delivery to `endpoint`; keys and indexes dropped
    for it and rebuilt, then VACUUM ANALYZE. Seconds per step."""
    teams = max(orders * 3 // 10, 1)
    mix = (2, 5, 10)
    first_order = 200_000_000_000
    steps: dict[str, float] = {}
    admin = await asyncpg.connect(dsn)
    try:
        schema = await admin.fetch(_SCHEMA, list(BIG_TABLES))
        keys = await admin.fetch(_KEYS, list(BIG_TABLES))
        indexes = await admin.fetch(_INDEXES, list(BIG_TABLES))
        began = time.perf_counter()
        for k in reversed(keys):  # foreign keys first
            await admin.execute(f'ALTER TABLE {k["tbl"]} DROP CONSTRAINT "{k["name"]}"')
        for i in indexes:
            await admin.execute(f"DROP INDEX {i['name']}")
        steps["drop keys and indexes"] = time.perf_counter() - began
        began = time.perf_counter()
        pool = await create_pool(dsn, 2, 2, command_timeout=None)  # type: ignore[arg-type]
        try:
            async with pool.acquire() as trades, pool.acquire() as outbox:
                await asyncio.gather(
                    fill_trades(trades, "f", teams, orders, mix, timedelta(days=1), first_order),
                    fill_outbox(outbox, "f", teams, orders, mix[:2], endpoint, first_order),
                )
        finally:
            await pool.close()
        steps["insert (2 connections)"] = time.perf_counter() - began
        began = time.perf_counter()
        await rebuild(dsn, keys, indexes)
        for k in keys:
            if k["contype"] == "f":
                await admin.execute(
                    f'ALTER TABLE {k["tbl"]} ADD CONSTRAINT "{k["name"]}" {k["def"]}'
                )
        steps["rebuild keys and indexes"] = time.perf_counter() - began
        if await admin.fetch(_SCHEMA, list(BIG_TABLES)) != schema:
            raise BenchFailure("the keys and indexes rebuilt differ from the migrations'")
        began = time.perf_counter()
        await admin.execute("VACUUM ANALYZE")
        steps["VACUUM ANALYZE"] = time.perf_counter() - began
    finally:
        await admin.close()
    return steps


async def rebuild(dsn: str, keys: list[asyncpg.Record], indexes: list[asyncpg.Record]) -> None:
    """Primary and unique keys, then the other indexes, two at a time (two connections)."""
    work = [
        f'ALTER TABLE {k["tbl"]} ADD CONSTRAINT "{k["name"]}" {k["def"]}'
        for k in keys
        if k["contype"] != "f"
    ] + [i["def"] for i in indexes]
    queue = iter(work)

    async def builder() -> None:
        conn = await asyncpg.connect(dsn, command_timeout=None)
        try:
            await conn.execute("SET maintenance_work_mem = '1GB'")
            for statement in queue:
                await conn.execute(statement)
        finally:
            await conn.close()

    await asyncio.gather(builder(), builder())
