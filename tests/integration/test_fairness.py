"""One merchant that never answers must not starve the others: fair claims across hosts,
immediate sends bounded per host and freed one by one, and a per-host breaker.

Real PostgreSQL and real local merchants. These tests use a database of their own (emptied
before each), so a drain of everything due sees only their tasks, through the real claim.
"""

import asyncio
import contextlib
import logging
import statistics
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from groupbuy_async.bootstrap import build_dispatcher
from groupbuy_async.callbacks.dispatch import Dispatcher
from groupbuy_async.callbacks.metrics import Metrics
from groupbuy_async.callbacks.rules import Admission, Breaker, BreakerChange, BreakerPolicy
from groupbuy_async.dev.outbox_fill import FILL_MERCHANT, endpoint_id_for
from groupbuy_async.settings import Settings

from ..conftest import make_tasks, own_pool
from ..merchant import LocalMerchant, start_merchant, success_once

# An attempt's time limit here; the hanging merchant never answers within it.
TIMEOUT = 0.5
# The bound on a healthy merchant's delivery latency under a hanging one. Unloaded it is a
# few tens of ms; before the fix the drain took 12 s and more, and immediate sends were
# written back only as their batch's slowest send ended (8 s), or refused outright.
HEALTHY_MAX = 2.0
HEALTHY_P50 = 1.0

Make = Callable[..., Dispatcher]


@pytest.fixture(scope="module")
async def own_db(server_urls: tuple[str, str]) -> AsyncIterator[asyncpg.Pool]:
    async with own_pool(server_urls, "groupbuy_fair") as pool:
        yield pool


@pytest.fixture
async def db(own_db: asyncpg.Pool) -> asyncpg.Pool:
    await own_db.execute("TRUNCATE notify_attempt, notify_task")
    return own_db


@pytest.fixture
async def dispatchers(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[Make]:
    """Dispatchers at the default bounds (concurrency, per host, immediate limit), with a
    short attempt timeout."""
    made: list[Dispatcher] = []

    def make(**overrides: Any) -> Dispatcher:
        s = settings.model_copy(update={"notify_timeout_seconds": TIMEOUT, **overrides})
        made.append(build_dispatcher(db, s, Metrics()))
        return made[-1]

    yield make
    for dispatcher in made:
        await dispatcher.close(grace_seconds=2)


@pytest.fixture
async def hanging() -> AsyncIterator[LocalMerchant]:
    """A merchant that never answers (until the test is over)."""
    over = asyncio.Event()

    m = await start_merchant(answer=success_once(over))
    yield m
    over.set()
    await m.server.close()


async def delivered_at(db: asyncpg.Pool, team_ids: list[str], within: float) -> dict[str, datetime]:
    """When each of these tasks was written back delivered, waiting up to `within` seconds
    for all of them."""
    done: dict[str, datetime] = {}
    with contextlib.suppress(TimeoutError):  # not all in time: the rest count as never
        async with asyncio.timeout(within):
            while len(done) < len(team_ids):
                rows = await db.fetch(
                    "SELECT team_id, update_time FROM notify_task"
                    " WHERE team_id = ANY($1::text[]) AND notify_status = 1",
                    team_ids,
                )
                done = {r["team_id"]: r["update_time"] for r in rows}
                await asyncio.sleep(0.01)
    return done


def latencies(
    since: dict[str, datetime], done: dict[str, datetime]
) -> tuple[float, float, list[float]]:
    """p50 and max seconds from each task's start to its write-back (inf: not delivered)."""
    each = sorted(
        (done[t] - began).total_seconds() if t in done else float("inf")
        for t, began in since.items()
    )
    return statistics.median(each), each[-1], each


async def rows(db: asyncpg.Pool, team_ids: list[str]) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT t.team_id, t.notify_status, t.notify_count, t.next_attempt_at, t.claim_token,"
        " (SELECT count(*) FROM notify_attempt a WHERE a.task_id = t.id) AS attempts"
        " FROM notify_task t WHERE t.team_id = ANY($1::text[])",
        team_ids,
    )


async def test_each_delivery_stores_the_endpoint_its_bounds_count_by(db: asyncpg.Pool) -> None:
    """Fairness and the breaker count by endpoint: two on one host and port are two."""
    urls = ["http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b", "not a url"]
    hosts = set()
    for url in urls:
        (team_id,) = await make_tasks(db, 1, url)
        stored = await db.fetchval("SELECT host FROM notify_task WHERE team_id = $1", team_id)
        assert stored == f"{FILL_MERCHANT}/{endpoint_id_for(url)}", url
        hosts.add(stored)
    assert len(hosts) == len(urls)


async def test_a_hanging_merchant_does_not_starve_a_healthy_one_in_a_drain(
    db: asyncpg.Pool, dispatchers: Make, hanging: LocalMerchant, merchant: LocalMerchant
) -> None:
    # The hanging merchant's backlog fell due a minute ago; the healthy one's falls due now.
    slow = await make_tasks(db, 600, hanging.url)
    await db.execute("UPDATE notify_task SET next_attempt_at = now() - interval '1 minute'")
    healthy = await make_tasks(db, 20, merchant.url)
    dispatcher = dispatchers()
    began = datetime.now(UTC)
    drain = asyncio.create_task(dispatcher.drain())
    try:
        done = await delivered_at(db, healthy, within=HEALTHY_MAX + 1)
        p50, worst, each = latencies(dict.fromkeys(healthy, began), done)
        assert p50 < HEALTHY_P50 and worst < HEALTHY_MAX, (
            f"healthy merchant under a hanging one: p50 {p50:.3f}s, max {worst:.3f}s {each}"
        )
        # The hanging merchant's sends went out all the same, and timed out.
        async with asyncio.timeout(5):
            while not await db.fetchval(
                "SELECT count(*) FROM notify_attempt WHERE error LIKE 'timeout%'"
            ):
                await asyncio.sleep(0.02)
    finally:
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
    assert merchant.requests == 20 and hanging.requests >= dispatcher.delivery.per_host
    assert len(slow) == 600


async def test_a_hanging_merchant_does_not_starve_a_healthy_one_on_the_immediate_path(
    db: asyncpg.Pool, dispatchers: Make, hanging: LocalMerchant, merchant: LocalMerchant
) -> None:
    slow = await make_tasks(db, 300, hanging.url)
    healthy = await make_tasks(db, 20, merchant.url)
    dispatcher = dispatchers()
    fired: dict[str, bool] = {}
    fired_at: dict[str, datetime] = {}

    def fire(team_id: str) -> None:
        fired_at[team_id] = datetime.now(UTC)
        fired[team_id] = dispatcher.fire(team_id)

    # Settlements completing together: healthy teams share a batch with hanging ones...
    for t in healthy[:10]:
        fire(t)
    slow_fired = sum(dispatcher.fire(t) for t in slow)
    await asyncio.sleep(0.1)
    # ...and more healthy ones complete while the hanging merchant holds its sends.
    for t in healthy[10:]:
        fire(t)
    done = await delivered_at(db, healthy, within=HEALTHY_MAX + 1)
    p50, worst, each = latencies(fired_at, done)
    refused = [t for t in healthy if not fired[t]]
    assert not refused and p50 < HEALTHY_P50 and worst < HEALTHY_MAX, (
        f"healthy merchant under a hanging one: {len(refused)} of 20 refused (left to the"
        f" worker), p50 {p50:.3f}s, max {worst:.3f}s {each}"
    )
    # The hanging merchant's immediate sends are bounded by its in-hand cap: the rest are
    # left to the worker, not held in the API.
    assert slow_fired == 256 - 10
    assert hanging.requests <= 2 * dispatcher.delivery.per_host
    await dispatcher.wait_background(grace_seconds=5)
    left = [r for r in await rows(db, slow) if r["notify_count"] == 0]
    assert len(left) >= 300 - 2 * dispatcher.delivery.per_host
    assert all(r["claim_token"] is None and r["attempts"] == 0 for r in left)


def pauses(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The breaker's lines: one per state change of a host."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.endswith("breaker") and r.msg.startswith("endpoint ")
    ]


def pause_for(dispatcher: Dispatcher, seconds: float) -> None:
    breakers = dispatcher.delivery.breakers
    breakers.policy = replace(breakers.policy, pause=timedelta(seconds=seconds))


def paused_hosts(dispatcher: Dispatcher) -> float | None:
    return dispatcher.delivery.metrics.registry.get_sample_value("groupbuy_notify_paused_hosts")


def counts_by_team(state: list[asyncpg.Record]) -> dict[str, int]:
    return {r["team_id"]: r["notify_count"] for r in state}


async def test_breaker_postpones_a_hanging_hosts_due_tasks_without_counting_attempts(
    db: asyncpg.Pool,
    dispatchers: Make,
    hanging: LocalMerchant,
    merchant: LocalMerchant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    slow = await make_tasks(db, 100, hanging.url)
    dispatcher = dispatchers()
    pause_for(dispatcher, 2.0)
    began = datetime.now(UTC)
    async with asyncio.timeout(10):
        counts = await dispatcher.drain()
    after = datetime.now(UTC)
    # One round of the host's bound was sent and timed out; the K-th timeout opened the
    # breaker (sends that took a slot freed by the first K - 1 went out too), and nothing
    # more was sent to the host.
    per_host, k = dispatcher.delivery.per_host, dispatcher.delivery.breakers.policy.failures
    tried = hanging.requests
    assert per_host <= tried < per_host + k, tried
    assert counts.retry_count == tried
    state = await rows(db, slow)
    assert sorted(counts_by_team(state).values()) == [0] * (100 - tried) + [1] * tried
    assert all(r["attempts"] == r["notify_count"] for r in state)
    # Everything else is postponed by the pause: unclaimed, no attempt counted or logged.
    rest = [r for r in state if r["notify_count"] == 0]
    assert all(r["claim_token"] is None and r["notify_status"] == 0 for r in rest)
    (until,) = {r["next_attempt_at"] for r in rest}
    pause = timedelta(seconds=2)
    assert began + pause <= until <= after + pause
    assert paused_hosts(dispatcher) == 1
    (line,) = pauses(caplog)
    assert "paused" in line and endpoint_id_for(hanging.url) in line, line
    # Another merchant is not held up by it.
    (healthy,) = await make_tasks(db, 1, merchant.url)
    assert (await dispatcher.drain()).success_count == 1
    assert (await rows(db, [healthy]))[0]["notify_status"] == 1
    assert hanging.requests == tried


async def test_breaker_probes_once_after_the_pause_and_closes_when_answered(
    db: asyncpg.Pool, dispatchers: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answering = asyncio.Event()
    over = asyncio.Event()
    spans: list[tuple[float, float]] = []

    async def behaviour(_: int) -> web.Response:
        began = asyncio.get_running_loop().time()
        if not answering.is_set():
            await over.wait()
        await asyncio.sleep(0.05)
        spans.append((began, asyncio.get_running_loop().time()))
        return web.Response(text="success")

    m = await start_merchant(answer=behaviour)
    try:
        team_ids = await make_tasks(db, 40, m.url)
        dispatcher = dispatchers(notify_retry_schedule="0s,0s,0s")
        pause_for(dispatcher, 0.5)
        async with asyncio.timeout(10):
            await dispatcher.drain()  # opens the breaker: then nothing is due for the host
        first_round = m.requests
        before = await rows(db, team_ids)
        first = max(r["next_attempt_at"] for r in before)
        await asyncio.sleep((first - datetime.now(UTC)).total_seconds() + 0.05)

        # The pause is over: one probe, still unanswered. Paused again, twice as long.
        async with asyncio.timeout(10):
            await dispatcher.drain()
        assert m.requests == first_round + 1
        state = await rows(db, team_ids)
        was = counts_by_team(before)
        (probe,) = [r for r in state if r["notify_count"] != was[r["team_id"]]]
        assert probe["notify_count"] == was[probe["team_id"]] + 1
        (second,) = {r["next_attempt_at"] for r in state if r is not probe}
        assert second - first >= timedelta(seconds=2 * 0.5 + TIMEOUT)
        assert paused_hosts(dispatcher) == 1

        # Over again, and now the merchant answers: one probe, then everything else.
        answering.set()
        await asyncio.sleep((second - datetime.now(UTC)).total_seconds() + 0.05)
        async with asyncio.timeout(10):
            counts = await dispatcher.drain()
        assert counts.success_count == 40
        (probe_span, *others) = sorted(spans)
        assert all(began >= probe_span[1] for began, _ in others), "sent before the probe ended"
        was = counts_by_team(state)
        after = await rows(db, team_ids)
        assert {r["notify_status"] for r in after} == {1}
        assert all(r["notify_count"] == was[r["team_id"]] + 1 for r in after)
        assert paused_hosts(dispatcher) == 0
        lines = pauses(caplog)
        assert [w for line in lines for w in ("paused", "probing", "resumed") if w in line] == [
            "paused", "probing", "paused", "probing", "resumed",
        ], lines  # fmt: skip
    finally:
        over.set()
        await m.server.close()


def test_breaker_counts_only_unanswered_attempts_in_a_row_and_caps_its_pause() -> None:
    policy = BreakerPolicy(3, timedelta(seconds=30), timedelta(seconds=100))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    b = Breaker()
    for answered in (False, False, True, False, False):  # an answer starts the count again
        assert b.observe(answered, False, now, policy) is None
    assert b.observe(False, False, now, policy) is BreakerChange.OPENED
    assert b.until == now + timedelta(seconds=30) and b.paused(now)
    # Sends begun before the pause say nothing new, answered or not.
    assert b.observe(True, False, now, policy) is None and b.paused(now)
    assert b.admit(now) is Admission.REFUSE
    for pause in (60, 100, 100):  # doubled after each unanswered probe, up to the longest
        later = b.until
        assert later is not None
        assert b.admit(later) is Admission.PROBE and not b.paused(later)
        assert b.admit(later) is Admission.WAIT
        assert b.observe(False, True, later, policy) is BreakerChange.REOPENED
        assert b.until == later + timedelta(seconds=pause)
    assert b.until is not None
    assert b.admit(b.until) is Admission.PROBE
    b.abandon_probe()  # not sent after all: the next send probes
    assert b.admit(b.until) is Admission.PROBE
    assert b.observe(True, True, b.until, policy) is BreakerChange.CLOSED
    assert b.until is None and b.admit(now) is Admission.SEND
    # A probe's silence never pauses for less than the first pause.
    fresh = Breaker()
    assert fresh.observe(False, True, now, policy) is BreakerChange.REOPENED
    assert fresh.until == now + timedelta(seconds=30)
