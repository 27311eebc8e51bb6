"""A broker restart while a drain publishes a backlog loses nothing (issue 15): a private
RabbitMQ (tests/faults/rabbit.py: its own node, ports, epmd and data; never the machine's
shared broker), stopped with SIGTERM (a clean shutdown) or SIGKILL (a crash) mid-drain and
started again on the same data and port. Every delivery ends delivered, every event id is in
the (durable) queue at least once, and a repeat is only ever of an event with a failed
attempt. Skipped, saying why, where RabbitMQ is not installed. A fault scenario: run by
`make faults` (after its scenarios 10a and 10b, the same fault against the worker process)
with `pytest --faults`; `make test` skips it."""

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from standardwebhooks import Webhook

from groupbuy_async.bootstrap import build_dispatcher
from groupbuy_async.callbacks.dispatch import Dispatcher
from groupbuy_async.callbacks.metrics import Metrics
from groupbuy_async.callbacks.rules import BrokerTarget
from groupbuy_async.settings import Settings

from ..conftest import SECRET, make_tasks, own_pool
from ..faults.broker import declare
from ..faults.rabbit import PrivateRabbit, missing

_WHY = missing()
pytestmark = [pytest.mark.fault, pytest.mark.skipif(_WHY is not None, reason=_WHY or "")]

EVENTS = 2000
CUT_AT = 500  # delivered when the broker is stopped
OUTAGE = 2.0  # how long it stays down
# From the broker being back until all are delivered: what is left of the breaker's pause
# (here 1 s at first, doubled after each unanswered probe up to MAX_PAUSE), a probe, then the
# rest of the backlog (a few seconds). With the service's 10-minute longest pause, a broker
# slow to come back (a loaded machine) could leave the endpoint paused past any bound here.
MAX_PAUSE = timedelta(seconds=4)
RECOVER_BOUND = 45.0
ROUTING_KEY = "rk"


@pytest.fixture(scope="module")
async def rabbit() -> AsyncIterator[PrivateRabbit]:
    root = Path(tempfile.mkdtemp(prefix="groupbuy-test-rabbit-"))
    broker = PrivateRabbit(root, f"gbtest-{os.getpid()}")
    try:
        await broker.start()
        yield broker
    finally:
        await asyncio.to_thread(broker.stop_now)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
async def own_db(server_urls: tuple[str, str]) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own: the drains here take all that is due."""
    async with own_pool(server_urls, "groupbuy_restart") as pool:
        yield pool


@pytest.fixture
async def dispatcher(
    own_db: asyncpg.Pool, settings: Settings, rabbit: PrivateRabbit
) -> AsyncIterator[Dispatcher]:
    await own_db.execute("TRUNCATE notify_attempt, notify_task")
    made = build_dispatcher(
        own_db,
        settings.model_copy(
            update={
                "amqp_url": rabbit.url,
                "notify_timeout_seconds": 2.0,
                "notify_retry_schedule": ",".join(["0.2s"] * 40),
            }
        ),
        Metrics(),
    )
    # Attempts cut short are unanswered: the endpoint's breaker pauses it (1 s here, not 30,
    # and MAX_PAUSE at the longest, not 10 minutes).
    breakers = made.delivery.breakers
    breakers.policy = replace(breakers.policy, pause=timedelta(seconds=1), max_pause=MAX_PAUSE)
    yield made
    await made.close(grace_seconds=1)


async def _take_all(url: str, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message the queue holds (the drain is over: nothing more comes)."""
    got = []
    connection = await aio_pika.connect(url, timeout=10)
    async with connection, asyncio.timeout(30):
        queue = await (await connection.channel()).declare_queue(name, passive=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
    return got


async def _delivered(db: asyncpg.Pool, team_ids: list[str]) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM notify_task WHERE team_id = ANY($1::text[])"
            " AND notify_status = 1",
            team_ids,
        )
    )


async def _drain_until_done(dispatcher: Dispatcher, db: asyncpg.Pool, team_ids: list[str]) -> int:
    """Drains one after another, as the worker's cron ticks run them, until every delivery
    is done; how many drains it took."""
    ticks = 0
    while await _delivered(db, team_ids) < len(team_ids):
        await dispatcher.drain()
        ticks += 1
        await asyncio.sleep(0.1)  # the next tick
    return ticks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_broker_restart_mid_drain_loses_no_delivery(
    own_db: asyncpg.Pool, dispatcher: Dispatcher, rabbit: PrivateRabbit, sig: signal.Signals
) -> None:
    name = f"restart-{sig.name.lower()}"
    await declare(rabbit.url, name, ROUTING_KEY)
    team_ids = await make_tasks(own_db, EVENTS, BrokerTarget(name, ROUTING_KEY))
    events = {
        str(r["event_id"])
        for r in await own_db.fetch(
            "SELECT event_id FROM notify_task WHERE team_id = ANY($1::text[])", team_ids
        )
    }
    began = time.monotonic()
    draining = asyncio.create_task(_drain_until_done(dispatcher, own_db, team_ids))
    try:
        async with asyncio.timeout(60):
            while (at_cut := await _delivered(own_db, team_ids)) < CUT_AT:
                assert not draining.done(), "the drain ended before the fault"
                await asyncio.sleep(0.02)
        cut_after = time.monotonic() - began
        await rabbit.stop(sig)
        await asyncio.sleep(OUTAGE)  # the outage itself: the broker stays down this long
        restarted = await rabbit.restart()
        back = time.monotonic()
        async with asyncio.timeout(RECOVER_BOUND):  # neither hung nor crashed
            ticks = await draining
        recovered = time.monotonic() - back
    finally:
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await draining  # its own failure, if any, was raised above
    assert at_cut < EVENTS, "the drain was over before the fault"
    statuses = await own_db.fetch(
        "SELECT notify_status, count(*) FROM notify_task WHERE team_id = ANY($1::text[])"
        " GROUP BY 1",
        team_ids,
    )
    assert {r[0]: r[1] for r in statuses} == {1: EVENTS}
    messages = await _take_all(rabbit.url, name)
    received = Counter(m.message_id for m in messages)
    assert set(received) == events  # at least once each, none lost, nothing else
    for message in messages:  # raises if forged
        Webhook(SECRET).verify(message.body, {k: str(v) for k, v in message.headers.items()})
    failed = await own_db.fetch(
        "SELECT t.event_id::text AS event, a.error FROM notify_attempt a"
        " JOIN notify_task t ON t.id = a.task_id"
        " WHERE t.team_id = ANY($1::text[]) AND a.error IS NOT NULL",
        team_ids,
    )
    assert failed, "no attempt failed: the fault missed the drain"
    # A publish whose confirm was lost may have been routed: repeated, but only those.
    repeated = {e for e, n in received.items() if n > 1}
    assert repeated <= {r["event"] for r in failed}, repeated - {r["event"] for r in failed}
    reasons = Counter(r["error"].split(":")[0][:60] for r in failed)
    print(
        f"{sig.name} {cut_after:.1f}s into the drain with {at_cut} of {EVENTS} delivered;"
        f" broker back in {restarted:.1f}s, all delivered {recovered:.1f}s later ({ticks}"
        f" drains); {len(messages)} messages, {len(messages) - len(events)} repeated;"
        f" {len(failed)} failed attempts: {dict(reasons)}"
    )
