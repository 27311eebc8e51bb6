"""The lifecycle benchmark's data, written straight in SQL (setting up 100,000 locks through
the API would take longer than what is measured), and the checks of what each part left."""

import asyncpg

ACTIVITY_ID, GOODS_ID, DISCOUNT_ID = 7_000_002, "bench-life-goods", "bench-life-20-off"
SOURCE, CHANNEL = "s01", "c01"
NOTIFY_URL = "http://127.0.0.1:9/n"  # stored with every event, never called: nothing dispatches

_CATALOG = f"""
INSERT INTO group_buy_discount (discount_id, discount_name, market_plan, market_expr)
VALUES ('{DISCOUNT_ID}', 'bench 20 off', 'ZJ', '20');
INSERT INTO sku (goods_id, source, channel, goods_name, original_price)
VALUES ('{GOODS_ID}', '{SOURCE}', '{CHANNEL}', 'bench goods', 100);
INSERT INTO group_buy_activity (activity_id, activity_name, discount_id, target, valid_time,
    status, start_time, end_time)
VALUES ({ACTIVITY_ID}, 'bench lifecycle', '{DISCOUNT_ID}', 3, 1440, 1, now() - interval '1 hour',
    now() + interval '2 days');
INSERT INTO sc_sku_activity (source, channel, goods_id, activity_id)
VALUES ('{SOURCE}', '{CHANNEL}', '{GOODS_ID}', {ACTIVITY_ID});
INSERT INTO merchant (merchant_id, name) VALUES ('bench', 'bench merchant');
INSERT INTO merchant_binding (source, channel, merchant_id)
VALUES ('{SOURCE}', '{CHANNEL}', 'bench');
-- One endpoint: each event writes one delivery, as in production (its secret is never opened).
INSERT INTO endpoint (merchant_id, endpoint_id, url, secret)
VALUES ('bench', 'never-called', '{NOTIFY_URL}', '\\x00');
"""

_TEAM_COLUMNS = """team_id, activity_id, source, channel, original_price, deduction_price,
    pay_price, target_count, complete_count, lock_count, status, valid_start_time,
    valid_end_time, notify_url"""
_ORDER_COLUMNS = """user_id, team_id, activity_id, start_time, end_time, goods_id, source,
    channel, original_price, deduction_price, pay_price, status, out_trade_no, out_trade_time,
    biz_id, completed_team, pay_deadline, create_time"""
_ORDER_VALUES = f"""{ACTIVITY_ID}, now(), now() + interval '2 days', '{GOODS_ID}', '{SOURCE}',
    '{CHANNEL}', 100, 20, 80"""

# Teams of 3 locks, none paid; every lock's deadline has passed, oldest first in lock order
# (10 ms apart, as shoppers locking one after another).
_DUE_LOCKS = f"""
INSERT INTO group_buy_order ({_TEAM_COLUMNS})
SELECT lpad(g::text, 8, '0'), {ACTIVITY_ID}, '{SOURCE}', '{CHANNEL}', 100, 20, 80, 3, 0,
       least(3, $1 - (g - 1) * 3), 0, now() - interval '1 hour', now() + interval '1 day',
       '{NOTIFY_URL}'
FROM generate_series(1, ($1 + 2) / 3) g;
INSERT INTO group_buy_order_list ({_ORDER_COLUMNS})
SELECT 'u' || g, lpad(((g - 1) / 3 + 1)::text, 8, '0'), {_ORDER_VALUES}, 0, 'o' || g, NULL,
       '{ACTIVITY_ID}_u' || g || '_1', false,
       now() - interval '1 hour' + g * interval '10 milliseconds', now() - interval '2 hours'
FROM generate_series(1, $1) g;
"""


async def setup(conn: asyncpg.Connection) -> str:
    """The activity; autovacuum off on the trade tables (an auto-ANALYZE at a random moment
    would change plans mid-run). Returns PostgreSQL's version."""
    await conn.execute(_CATALOG)
    for table in ("group_buy_order", "group_buy_order_list", "event", "notify_task"):
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    version: str = await conn.fetchval("SHOW server_version")
    return version.split()[0]


async def insert_due_locks(conn: asyncpg.Connection, count: int) -> None:
    """`count` unpaid locks past their payment deadline, three to a forming team."""
    async with conn.transaction():
        await conn.execute(_DUE_LOCKS.replace("$1", str(int(count))))
    await conn.execute("VACUUM ANALYZE group_buy_order, group_buy_order_list, event, notify_task")
    await conn.execute("CHECKPOINT")


async def check_closed(conn: asyncpg.Connection, count: int) -> list[str]:
    problems = []
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 2 AND biz_id IS NULL) AS closed,"
        " count(*) AS orders FROM group_buy_order_list"
    )
    assert row is not None
    if (row["closed"], row["orders"]) != (count, count):
        problems.append(f"close: {row['closed']}/{row['orders']} orders closed, want {count}")
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE lock_count = 0 AND status = 0) AS emptied, count(*) AS teams"
        " FROM group_buy_order"
    )
    assert row is not None
    if row["emptied"] != row["teams"]:
        problems.append(f"close: {row['emptied']}/{row['teams']} teams have every slot free")
    events = await conn.fetchval(
        "SELECT count(DISTINCT order_id) FROM event WHERE event_type = 'order.closed'"
    )
    total = await conn.fetchval("SELECT count(*) FROM event")
    deliveries = await conn.fetchval("SELECT count(*) FROM notify_task")
    if (events, total, deliveries) != (count, count, count):
        problems.append(
            f"close: {events} orders with order.closed, {total} events, {deliveries}"
            f" deliveries; want {count}"
        )
    return problems


# Teams of 2: even teams complete (both paid: two paid_team refunds), odd ones forming with one
# paid and one locked member (a paid refund and an unpaid one).
_REFUNDABLE = f"""
INSERT INTO group_buy_order ({_TEAM_COLUMNS})
SELECT lpad(g::text, 8, '0'), {ACTIVITY_ID}, '{SOURCE}', '{CHANNEL}', 100, 20, 80, 2,
       CASE WHEN g % 2 = 0 THEN 2 ELSE 1 END, 2, CASE WHEN g % 2 = 0 THEN 1 ELSE 0 END,
       now() - interval '1 minute', now() + interval '1 day', '{NOTIFY_URL}'
FROM generate_series(1, $1) g;
INSERT INTO group_buy_order_list ({_ORDER_COLUMNS})
SELECT 'u' || g || '-' || m, lpad(g::text, 8, '0'), {_ORDER_VALUES},
       CASE WHEN m = 2 AND g % 2 = 1 THEN 0 ELSE 1 END, 'o' || g || '-' || m,
       CASE WHEN m = 2 AND g % 2 = 1 THEN NULL ELSE now() END,
       '{ACTIVITY_ID}_u' || g || '-' || m || '_1', m = 2 AND g % 2 = 0,
       now() + interval '1 day', now() - interval '1 minute'
FROM generate_series(1, $1) g, generate_series(1, 2) m;
"""


def refund_bodies(count: int) -> list[tuple[dict[str, str], str]]:
    """Every order of the refundable teams: (refund body, the refundType it must answer)."""
    bodies = []
    for g in range(1, count // 2 + 1):
        for m in (1, 2):
            kind = "paid_team" if g % 2 == 0 else ("paid" if m == 1 else "unpaid")
            body = {"userId": f"u{g}-{m}", "source": SOURCE, "channel": CHANNEL}
            bodies.append(({**body, "outTradeNo": f"o{g}-{m}"}, kind))
    return bodies


async def insert_refundable(conn: asyncpg.Connection, count: int) -> None:
    """`count` orders (count // 2 teams of two) to refund, as refund_bodies() lists them."""
    async with conn.transaction():
        await conn.execute(_REFUNDABLE.replace("$1", str(int(count) // 2)))
    await conn.execute("VACUUM ANALYZE group_buy_order, group_buy_order_list, event, notify_task")
    await conn.execute("CHECKPOINT")


async def check_refunded(conn: asyncpg.Connection, count: int, label: str) -> list[str]:
    problems = []
    teams = count // 2
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 3 AND refund_type = 'paid_team') AS paid_team,"
        " count(*) FILTER (WHERE status = 3 AND refund_type = 'paid') AS paid,"
        " count(*) FILTER (WHERE status = 2 AND refund_type = 'unpaid') AS unpaid"
        " FROM group_buy_order_list"
    )
    assert row is not None
    want = (teams // 2 * 2, teams - teams // 2, teams - teams // 2)
    if tuple(row) != want:
        problems.append(f"{label}: paid_team/paid/unpaid orders {tuple(row)}, want {want}")
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 3 AND lock_count = 2 AND complete_count = 2)"
        "   AS complete,"
        " count(*) FILTER (WHERE status = 0 AND lock_count = 0 AND complete_count = 0) AS freed"
        " FROM group_buy_order"
    )
    assert row is not None
    if (row["complete"], row["freed"]) != (teams // 2, teams - teams // 2):
        problems.append(f"{label}: teams {tuple(row)}, want {(teams // 2, teams - teams // 2)}")
    events = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE event_type = 'order.refunded') AS refunded,"
        " count(*) FILTER (WHERE event_type = 'order.closed') AS closed FROM event"
    )
    assert events is not None
    if tuple(events) != (want[0] + want[1], want[2]):
        problems.append(f"{label}: events {tuple(events)}, want {(want[0] + want[1], want[2])}")
    return problems
