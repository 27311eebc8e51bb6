"""Retention on real PostgreSQL: the worker's prune job, called as arq calls it, removes
finished deliveries, their attempts and events left without deliveries once older than
GROUPBUY_RETENTION_DAYS, in batches; keeps what is open, held or recent, and every trade;
never waits for a row someone holds. The event feed says what it keeps."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from groupbuy_async.callbacks import claims, retention
from groupbuy_async.dev.outbox_fill import fanned_out_teams
from groupbuy_async.merchants.secret_box import SecretBox
from groupbuy_async.settings import Settings
from groupbuy_async.worker.context import shutdown, startup
from groupbuy_async.worker.jobs import every, every_minutes, prune_retention

from ..conftest import SECRET, SECRETS_KEY, Api, new_id, now_iso, sample

OLD = 31  # days: past the default retention (30)
FEED = "/api/v1/admin/events"


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    """The worker's ctx, as arq hands it to a job."""
    worker_ctx: dict[str, Any] = {"settings": settings}
    await startup(worker_ctx)
    yield worker_ctx
    await shutdown(worker_ctx)


@pytest.fixture(autouse=True)
async def no_mark_left(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The session's other tests see a database where nothing was ever pruned (an unknown
    feed cursor is their 400 there, not a 410)."""
    yield
    await pool.execute("DELETE FROM retention_mark")


def _url() -> str:
    return f"http://127.0.0.1:9/retention-{uuid.uuid4().hex[:8]}"


async def _teams(pool: asyncpg.Pool, count: int, urls: list[str]) -> list[str]:
    """Completed teams, each with one team.completed event delivered to each of `urls`, not
    due for a day (no drain of another test sends them)."""
    box = SecretBox(SECRETS_KEY)
    return await fanned_out_teams(pool, box, count, urls, SECRET, timedelta(days=1))


async def _set(
    pool: asyncpg.Pool,
    teams: list[str],
    status: int,
    changed_days_ago: float,
    written_days_ago: float = OLD,
    url: str | None = None,
) -> None:
    """The teams' deliveries (those to `url` only, if given) in `status`, last changed
    `changed_days_ago`; their events written `written_days_ago`."""
    await pool.execute(
        "UPDATE event SET create_time = now() - make_interval(secs => $2 * 86400)"
        " WHERE team_id = ANY($1::text[])",
        teams,
        written_days_ago,
    )
    await pool.execute(
        "UPDATE notify_task SET notify_status = $2,"
        " update_time = now() - make_interval(secs => $3 * 86400)"
        " WHERE team_id = ANY($1::text[]) AND ($4::text IS NULL OR notify_url = $4)",
        teams,
        status,
        changed_days_ago,
        url,
    )


async def _attempts(pool: asyncpg.Pool, teams: list[str], each: int) -> None:
    await pool.execute(
        "INSERT INTO notify_attempt (task_id, attempt, started_at, duration_ms)"
        " SELECT t.id, g, now() - interval '40 days', 5"
        " FROM notify_task t CROSS JOIN generate_series(1, $2) g WHERE t.team_id = ANY($1::text[])",
        teams,
        each,
    )


async def _left(pool: asyncpg.Pool, teams: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """Per team: (trade rows, events, deliveries, attempts) still there."""
    rows = await pool.fetch(
        """SELECT g.team_id,
                  (SELECT count(*) FROM event e WHERE e.team_id = g.team_id) AS events,
                  (SELECT count(*) FROM notify_task t WHERE t.team_id = g.team_id) AS deliveries,
                  (SELECT count(*) FROM notify_attempt a JOIN notify_task t ON t.id = a.task_id
                   WHERE t.team_id = g.team_id) AS attempts
           FROM group_buy_order g WHERE g.team_id = ANY($1::text[])""",
        teams,
    )
    return {r["team_id"]: (1, r["events"], r["deliveries"], r["attempts"]) for r in rows}


async def test_prune_removes_what_is_finished_and_old_in_batches_and_keeps_the_rest(
    pool: asyncpg.Pool,
    ctx: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    one, two = _url(), _url()
    delivered = await _teams(pool, 5, [one])  # old, delivered: all goes
    errored = await _teams(pool, 1, [one])  # old, in error: goes
    retrying, waiting = await _teams(pool, 1, [one]), await _teams(pool, 1, [one])
    (held_too,) = await _teams(pool, 1, [one, two])  # one delivered, one held
    late = await _teams(pool, 1, [one])  # an old event delivered yesterday (a late retry)
    recent = await _teams(pool, 1, [one])
    orphan, fresh_orphan = await _teams(pool, 1, [one]), await _teams(pool, 1, [one])
    await _set(pool, delivered, 1, OLD)
    await _set(pool, errored, 3, OLD)
    await _set(pool, retrying, 2, OLD)
    await _set(pool, waiting, 0, OLD)
    await _set(pool, [held_too], 1, OLD, url=one)
    await _set(pool, [held_too], 4, OLD, url=two)
    await _set(pool, late, 1, 1)
    await _set(pool, recent, 1, 1, written_days_ago=1)
    await _set(pool, orphan, 1, OLD)
    await _set(pool, fresh_orphan, 1, 1, written_days_ago=29)
    # Events no endpoint took (none has a delivery): an old one goes, a recent one stays.
    await pool.execute(
        "DELETE FROM notify_task WHERE team_id = ANY($1::text[])", orphan + fresh_orphan
    )
    await _attempts(pool, delivered + errored + retrying + [held_too], 2)
    everyone = [
        *delivered, *errored, *retrying, *waiting, held_too, *late, *recent, *orphan,
        *fresh_orphan,
    ]  # fmt: skip
    before = await _left(pool, everyone)

    monkeypatch.setattr(retention, "PRUNE_BATCH", 2)
    with caplog.at_level(logging.INFO, "groupbuy_async.worker"):
        counts = await prune_retention(ctx)

    # 5 + 1 + 1 deliveries (the held one's delivered sibling), 2 attempts each; the events
    # of the first 6 and the old orphan.
    assert counts == {"notify_attempt": 14, "notify_task": 7, "event": 7}
    left = await _left(pool, everyone)
    assert {t: left[t] for t in delivered + errored + orphan} == dict.fromkeys(
        delivered + errored + orphan, (1, 0, 0, 0)
    )  # trades stay
    assert left[held_too] == (1, 1, 1, 2)  # the held delivery and its attempts, and the event
    for kept in (*retrying, *waiting, *late, *recent, *fresh_orphan):
        assert left[kept] == before[kept], kept
    # In batches of 2: 4 of deliveries (2, 2, 2, 1), then 6 walking the 11 old events.
    (line,) = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
    assert line == (
        "pruned past the 30-day retention: 14 attempts, 7 deliveries, 7 events (10 batches)"
    )
    metrics = ctx["services"].metrics.render().decode()
    assert sample(metrics, 'groupbuy_pruned_total{table="notify_task"}') == 7
    assert sample(metrics, 'groupbuy_pruned_total{table="notify_attempt"}') == 14
    assert sample(metrics, 'groupbuy_pruned_total{table="event"}') == 7
    mark = await retention.pruned_before(pool)
    assert mark is not None
    assert abs(mark - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=1)

    # Nothing left to prune: no line, nothing counted.
    caplog.clear()
    with caplog.at_level(logging.INFO, "groupbuy_async.worker"):
        assert await prune_retention(ctx) == {"notify_attempt": 0, "notify_task": 0, "event": 0}
    assert not [r for r in caplog.records if "retention" in r.getMessage()]


async def test_prune_skips_rows_others_hold_and_never_blocks_a_claim(
    pool: asyncpg.Pool, database_url: str
) -> None:
    url = _url()
    held, free = await _teams(pool, 1, [url]), await _teams(pool, 1, [url])
    (due,) = await _teams(pool, 1, [url])
    await _set(pool, held + free, 1, OLD)
    await pool.execute(
        "UPDATE notify_task SET next_attempt_at = now() WHERE team_id = $1", due
    )  # an open delivery a claim takes
    other = await asyncpg.connect(database_url)
    try:
        # A replay (or resend) of `held`'s delivery in progress: its row is locked.
        async with other.transaction():
            await other.execute("SELECT 1 FROM notify_task WHERE team_id = $1 FOR UPDATE", held[0])
            pruned = await asyncio.wait_for(
                retention.prune(pool, 30, retention.Pruned(), batch=1), 10
            )
            assert (pruned.notify_task, pruned.event) == (1, 1)  # `free`'s, not waited for
        assert (await _left(pool, held))[held[0]] == (1, 1, 1, 0)
        assert (await _left(pool, free))[free[0]] == (1, 0, 0, 0)

        # A prune's batch holding its rows does not hold up a claim of open deliveries.
        async with other.transaction():
            cutoff = datetime.now(UTC) - timedelta(days=30)
            locked = await other.fetch(retention._FINISHED, cutoff, 1000)
            assert locked  # `held`'s delivery, now free to prune
            taken = await asyncio.wait_for(claims.claim(pool, 10, timedelta(seconds=60), [due]), 10)
            assert [t.team_id for t in taken] == [due]
    finally:
        await other.close()
    assert (await retention.prune(pool, 30, retention.Pruned())).notify_task >= 1
    assert (await _left(pool, held))[held[0]] == (1, 0, 0, 0)


async def test_a_failed_tick_is_logged_and_the_next_one_prunes(
    pool: asyncpg.Pool,
    ctx: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    teams = await _teams(pool, 1, [_url()])
    await _set(pool, teams, 1, OLD)

    async def broken(*args: Any) -> int:
        raise asyncpg.UndefinedTableError('relation "event" does not exist')

    with monkeypatch.context() as patched:
        patched.setattr(retention, "prune_events", broken)
        with caplog.at_level(logging.INFO, "groupbuy_async.worker"):
            assert await prune_retention(ctx) is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("pruning past the retention failed" in m for m in messages), messages
    # What it pruned before failing is counted and said.
    assert any("1 deliveries, 0 events" in m for m in messages), messages
    assert (await _left(pool, teams))[teams[0]] == (1, 1, 0, 0)
    counts = await prune_retention(ctx)
    assert counts is not None and counts["event"] >= 1
    assert (await _left(pool, teams))[teams[0]] == (1, 0, 0, 0)


async def test_the_feed_says_what_it_keeps_and_a_pruned_cursor_is_gone(
    api: Api, pool: asyncpg.Pool, ctx: dict[str, Any]
) -> None:
    act = await api.new_activity()
    where = {k: act[k] for k in ("source", "channel")}
    out = new_id()
    status, env = await api.lock(**act, userId="r1", outTradeNo=out)
    assert status == 200, env
    team_id = env["data"]["teamId"]
    status, env = await api.refund(**where, userId="r1", outTradeNo=out)
    assert (status, env["data"]["refundType"]) == (200, "unpaid"), env
    status, env = await api.call("GET", f"{FEED}?teamId={team_id}", admin=True)
    assert status == 200 and env["data"]["retainedSince"] is None, env
    (closed,) = env["data"]["items"]
    status, env = await api.call("GET", f"{FEED}?after={closed['eventId']}", admin=True)
    assert status == 200, env
    nowhere = "00000000-0000-4000-8000-000000000000"
    status, env = await api.call("GET", f"{FEED}?after={nowhere}", admin=True)
    assert (status, env["code"]) == (400, "0002")  # nothing pruned yet: a mistake

    await _set(pool, [team_id], 1, OLD)  # closed, and its order.closed delivered, long ago
    await pool.execute(
        "UPDATE group_buy_order_list SET update_time = now() - make_interval(days => $2)"
        " WHERE team_id = $1",
        team_id,
        OLD,
    )
    counts = await prune_retention(ctx)
    assert counts is not None and counts["event"] >= 1

    for after in (closed["eventId"], nowhere):
        status, env = await api.call("GET", f"{FEED}?after={after}", admin=True)
        assert (status, env["code"]) == (410, "E0204"), env
        assert "start again without after" in env["info"]
    status, env = await api.call("GET", f"{FEED}?limit=1", admin=True)
    assert status == 200, env
    since = datetime.fromisoformat(env["data"]["retainedSince"])
    assert abs(since - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=1)
    status, env = await api.call("GET", f"{FEED}?teamId={team_id}", admin=True)
    assert status == 200 and env["data"]["items"] == [], env
    status, env = await api.call("GET", f"{FEED}/{closed['eventId']}", admin=True)
    assert status == 404
    # A settlement retried for the closed order is refused as before, and does not write
    # its pruned order.closed again (under a new event id).
    status, env = await api.settle(**where, userId="r1", outTradeNo=out, outTradeTime=now_iso())
    assert (status, env["code"]) == (409, "E0112"), env
    assert await pool.fetchval("SELECT count(*) FROM event WHERE team_id = $1", team_id) == 0
    # The order pull answers from the trade tables, never pruned.
    status, env = await api.call(
        "GET", f"/api/v1/gbm/orders/{out}?source={where['source']}&channel={where['channel']}"
        "&userId=r1",
    )  # fmt: skip
    assert (status, env["data"]["tradeOrderStatus"]) == (200, 2), env


async def test_the_openapi_declares_the_pruned_cursor(api: Api) -> None:
    status, doc = await api.call("GET", "/openapi.json")
    assert status == 200
    operation = doc["paths"][FEED]["get"]
    assert "E0204" in operation["responses"]["410"]["description"]
    page = doc["components"]["schemas"]["EventPage"]
    assert "retainedSince" in page["properties"]


def test_the_prune_runs_every_few_minutes() -> None:
    assert (every(300), every_minutes(300)) == ({0}, {0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55})
    assert every_minutes(60) is None and every_minutes(15) is None
    assert every_minutes(3600) == {0} and every_minutes(420) == {0, 10, 20, 30, 40, 50}


async def test_the_walk_through_old_events_goes_on_where_it_stopped(pool: asyncpg.Pool) -> None:
    """Each batch looks at the next old events, so that one kept for months (a held
    delivery) never hides those behind it; the walk starts over once it reached the end."""
    held = await _teams(pool, 3, [_url()])
    await _set(pool, held, 4, OLD)
    keys = await pool.fetch(
        "SELECT create_time, id FROM event WHERE team_id = ANY($1::text[])", held
    )
    cutoff = datetime.now(UTC) - timedelta(days=30)
    walk, start = retention.Walk(), retention.Walk().after
    seen: list[tuple[datetime, int]] = []
    for _ in range(10_000):
        await retention.prune_events(pool, cutoff, 1, walk)
        if walk.after == start:
            break
        seen.append(walk.after)
    assert seen == sorted(set(seen))  # forward, each once
    assert {(k["create_time"], k["id"]) for k in keys} <= set(seen)
    assert (await _left(pool, held))[held[0]] == (1, 1, 1, 0)  # held: kept
