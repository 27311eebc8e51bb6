"""One merchant that never answers must not starve the others: fair claims across hosts,
immediate sends bounded per host and freed one by one, and a per-host breaker.

Real PostgreSQL and real local merchants. These tests use a database of their own (emptied
before each), so a drain of everything due sees only their tasks, through the real claim.
"""

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from groupbuy_async.bootstrap import build_dispatcher
from groupbuy_async.callbacks.dispatch import Dispatcher
from groupbuy_async.callbacks.metrics import Metrics
from groupbuy_async.db import create_pool, temporary_database
from groupbuy_async.settings import Settings

from ..conftest import SECRET, make_tasks
from ..merchant import Merchant, start_merchant

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
    async with temporary_database(server_urls[0], "groupbuy_fair") as url:
        db = await create_pool(url, 1, 10)
        try:
            yield db
        finally:
            await db.close()


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
        s = settings.model_copy(
            update={"notify_secret": SECRET, "notify_timeout_seconds": TIMEOUT, **overrides}
        )
        made.append(build_dispatcher(db, s, Metrics()))
        return made[-1]

    yield make
    for dispatcher in made:
        await dispatcher.close(grace_seconds=2)


@pytest.fixture
async def hanging() -> AsyncIterator[Merchant]:
    """A merchant that never answers (until the test is over)."""
    over = asyncio.Event()

    async def never(_: int) -> web.Response:
        await over.wait()
        return web.Response(text="success")

    m = await start_merchant(behaviour=never)
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


async def test_each_task_stores_the_host_its_bounds_count_by(db: asyncpg.Pool) -> None:
    urls = {
        "http://127.0.0.1:8080/notify": "127.0.0.1:8080",
        "https://Merchant.Example/cb?x=1": "merchant.example:443",
        "http://merchant.example/cb": "merchant.example:80",
        "HTTP://merchant.example:80#f": "merchant.example:80",
        "http://user:p@ss@merchant.example:81/x": "merchant.example:81",
        "http://[::1]:9000/n": "[::1]:9000",
        "not a url": "",
    }
    for url, host in urls.items():
        (team_id,) = await make_tasks(db, 1, url)
        stored = await db.fetchval("SELECT host FROM notify_task WHERE team_id = $1", team_id)
        assert stored == host, url


async def test_a_hanging_merchant_does_not_starve_a_healthy_one_in_a_drain(
    db: asyncpg.Pool, dispatchers: Make, hanging: Merchant, merchant: Merchant
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
    assert len(merchant.requests) == 20 and len(hanging.requests) >= dispatcher.per_host
    assert len(slow) == 600


async def test_a_hanging_merchant_does_not_starve_a_healthy_one_on_the_immediate_path(
    db: asyncpg.Pool, dispatchers: Make, hanging: Merchant, merchant: Merchant
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
    assert len(hanging.requests) <= 2 * dispatcher.per_host
    await dispatcher.wait_background(grace_seconds=5)
    left = [r for r in await rows(db, slow) if r["notify_count"] == 0]
    assert len(left) >= 300 - 2 * dispatcher.per_host
    assert all(r["claim_token"] is None and r["attempts"] == 0 for r in left)
