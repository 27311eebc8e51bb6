"""Event bodies and ids made by PostgreSQL (the close cron writes its events in its own
statement) are the bytes and ids the service makes in Python: events.body, new_event_id."""

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from groupbuy_async.callbacks import events, outbox
from groupbuy_async.callbacks.events import EventType

TEXTS = [
    "",
    "plain-0001",
    'q"uote',
    "back\\slash",
    "line\nfeed\r\ttab\b\f",
    "".join(chr(c) for c in range(1, 32)) + "\x7f",
    "用户-ü-é",
    "emoji 🎉 and \u2028 separator",
    "'single' -- quotes",
]


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 12, 3, 14, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 12, 3, 14, 0, 0, 0, tzinfo=UTC),  # isoformat leaves out microseconds
        datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=UTC),  # leading zeros kept
        datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=8))),
    ],
)
async def test_a_body_made_by_postgresql_is_the_body_made_in_python(
    pool: asyncpg.Pool, when: datetime
) -> None:
    data_sql = [
        ("orderId", "$1::text"), ("outTradeNo", "$2::text"), ("userId", "$3::text"),
        ("activityId", "$4::bigint"),
    ]  # fmt: skip
    made = outbox.body_sql(
        EventType.ORDER_CLOSED, data_sql, "$5::uuid", outbox.iso_timestamp_sql("$6::timestamptz")
    )
    async with pool.acquire() as conn:
        await conn.execute(
            "SET TimeZone = 'Asia/Shanghai'"
        )  # the body's time is UTC whatever it is
        try:
            for text in TEXTS:
                event_id = events.new_event_id()
                got = await conn.fetchval(
                    f"SELECT {made}", text, text[::-1], f"u-{text}", 7, event_id, when
                )
                data: dict[str, Any] = {
                    "orderId": text, "outTradeNo": text[::-1], "userId": f"u-{text}",
                    "activityId": 7,
                }  # fmt: skip
                stamp = when.astimezone(UTC).isoformat()
                expected = events.body(EventType.ORDER_CLOSED, str(event_id), stamp, data)
                assert got == expected, text
        finally:
            await conn.execute("RESET TimeZone")


async def test_a_null_is_null_and_no_data_is_an_empty_object(pool: asyncpg.Pool) -> None:
    stamp = outbox.iso_timestamp_sql("$2::timestamptz")
    when = datetime(2026, 12, 3, 14, 0, 1, 5, tzinfo=UTC)
    event_id = str(uuid.uuid4())
    with_null = outbox.body_sql(EventType.TEAM_FAILED, [("teamId", "NULL::text")], "$1", stamp)
    empty = outbox.body_sql(EventType.TEAM_FAILED, [], "$1", stamp)
    got = await pool.fetchrow(f"SELECT {with_null} AS a, {empty} AS b", event_id, when)
    assert got is not None
    iso = when.isoformat()
    assert got["a"] == events.body("team.failed", event_id, iso, {"teamId": None})
    assert got["b"] == events.body("team.failed", event_id, iso, {})


async def test_now_is_the_statements_time_as_isoformat_writes_it(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(f"SELECT {outbox.NOW} AS text, now() AS at")
    assert row is not None
    assert row["text"] == row["at"].astimezone(UTC).isoformat()


async def test_ids_made_by_postgresql_are_version_7_of_this_millisecond(
    pool: asyncpg.Pool,
) -> None:
    before = time.time_ns() // 1_000_000
    ids: list[uuid.UUID] = [
        r["id"]
        for r in await pool.fetch(
            f"SELECT {outbox.NEW_EVENT_ID} AS id FROM generate_series(1, 500)"
        )
    ]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 500
    python = events.new_event_id()
    for made in ids:
        assert (
            (made.version, made.variant) == (python.version, python.variant) == (7, uuid.RFC_4122)
        )
        assert before <= made.int >> 80 <= after  # the same clock, milliseconds rounded down
