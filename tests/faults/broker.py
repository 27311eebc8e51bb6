"""10a, 10b: the broker restarts while the worker publishes a backlog to a broker endpoint.

A private RabbitMQ (rabbit.py; never the machine's shared one), a durable exchange and a
durable queue bound to it; BROKER_EVENTS completed teams, each with its team.completed
delivery to that endpoint, written straight to the outbox; the worker drains them. Once a
quarter is recorded delivered, the broker is stopped (10a: SIGTERM, a clean shutdown; 10b:
SIGKILL, a crash) and started again BROKER_OUTAGE s later on the same data and port. Then the
drain must finish within RECOVER_BOUND s of the broker being back, every delivery recorded
delivered (status 1), and the queue must hold every event id at least once, each message
signed: a delivery recorded delivered was confirmed by the broker, and a confirmed persistent
message survives the restart. A repeat is allowed only of an event one of whose attempts
failed (its publish may have been routed while its confirm was lost): at least once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import aio_pika
import asyncpg
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from groupbuy_async.callbacks.rules import BrokerTarget
from groupbuy_async.dev.outbox_fill import fanned_out_teams
from groupbuy_async.merchants.secret_box import SecretBox

from .harness import SECRET, SECRETS_KEY, Outcome, Run, Stage
from .rabbit import missing

BROKER_EVENTS = 3000
# The broker is stopped once this share of the backlog is recorded delivered.
CUT_AT = 0.25
BROKER_OUTAGE = 3.0
# After the broker is back: the breaker's first pause (30 s: the attempts cut short opened
# it), then the rest of the backlog.
RECOVER_BOUND = 75.0
ROUTING_KEY = "team.completed"

EXPECTATIONS = f"""\
10a, 10b (the broker stopped with SIGTERM / SIGKILL once {CUT_AT:.0%} of {BROKER_EVENTS} broker
deliveries are done, back {BROKER_OUTAGE:g} s later): all delivered (status 1) within {RECOVER_BOUND:g} s of the
broker being back, the worker never exits; every event id in the queue, signed; a repeat only
of an event with a failed attempt."""


async def declare(url: str, name: str, routing_key: str = ROUTING_KEY) -> None:
    """The consumer's side: a durable exchange and a durable queue bound to it, empty."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, durable=True)
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, routing_key)
        await queue.purge()


async def _consume(url: str, name: str, seconds: float) -> list[aio_pika.abc.AbstractMessage]:
    """Every message the queue holds (the drain is over: nothing more comes)."""
    got: list[aio_pika.abc.AbstractMessage] = []
    connection = await aio_pika.connect(url, timeout=10)
    async with connection, asyncio.timeout(seconds):
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
    return got


async def _statuses(pool: asyncpg.Pool, team_ids: list[str]) -> Counter[int]:
    rows = await pool.fetch(
        "SELECT notify_status, count(*) FROM notify_task WHERE team_id = ANY($1::text[])"
        " GROUP BY 1",
        team_ids,
    )
    return Counter({int(r[0]): int(r[1]) for r in rows})


async def _wait(pool: asyncpg.Pool, team_ids: list[str], done: int, deadline: float) -> bool:
    """Until at least `done` of the deliveries are recorded delivered, or the deadline."""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            if (await _statuses(pool, team_ids))[1] >= done:
                return True
        await asyncio.sleep(0.05)
    return False


async def broker_fault(run: Run, number: str, name: str, hard: bool) -> Outcome:
    why = missing()
    if why is not None:
        return Outcome(number, name, skipped=why, notes=[f"skipped: {why}"])
    rabbit = await run.broker()
    exchange = f"faults-{number}"
    async with Stage(run, number, name, settings={"amqp_url": rabbit.url}) as s:
        o = s.outcome
        await declare(rabbit.url, exchange)
        pool = await asyncpg.create_pool(s.db_url, min_size=1, max_size=2)
        try:
            team_ids = await fanned_out_teams(
                pool, SecretBox(SECRETS_KEY), BROKER_EVENTS, [BrokerTarget(exchange, ROUTING_KEY)],
                SECRET,
            )  # fmt: skip
            events = {
                str(r[0]): r[1]
                for r in await pool.fetch(
                    "SELECT event_id, id FROM notify_task WHERE team_id = ANY($1::text[])",
                    team_ids,
                )
            }
            o.attempted = len(events)
            began = time.monotonic()
            await s.worker.start()
            cut = int(BROKER_EVENTS * CUT_AT)
            if not await _wait(pool, team_ids, cut, time.monotonic() + 60):
                o.problems.append(f"under {cut} deliveries done within 60 s: no fault injected")
                return o
            at_cut = (await _statuses(pool, team_ids))[1]
            stopped = await (rabbit.kill9() if hard else rabbit.stop())
            o.notes.append(
                f"{'SIGKILL' if hard else 'SIGTERM'} to the broker {time.monotonic() - began:.1f}s"
                f" into the drain, with {at_cut} of {len(events)} delivered; gone in {stopped:.1f}s"
            )
            o.expect(at_cut < len(events), "the drain was over before the fault")
            await asyncio.sleep(BROKER_OUTAGE)
            restarted = await rabbit.restart()
            back = time.monotonic()
            drained = await _wait(pool, team_ids, len(events), back + RECOVER_BOUND)
            recovered = time.monotonic() - back
            s.idle()
            statuses = await _statuses(pool, team_ids)
            o.notes.append(
                f"broker back {restarted:.1f}s after its start; "
                + (f"all delivered {recovered:.1f}s later" if drained else f"statuses {statuses}")
            )
            o.expect(
                drained,
                f"not all delivered within {RECOVER_BOUND:g}s of the broker's restart:"
                f" statuses {dict(statuses)}",
            )
            await _account(o, rabbit.url, exchange, pool, events)
        finally:
            await pool.close()
        o.expect(
            s.worker.running and not s.worker.unexpected_exits,
            f"the worker exited unasked x{len(s.worker.unexpected_exits)}",
        )
        return o


async def _account(
    o: Outcome, url: str, queue: str, pool: asyncpg.Pool, events: dict[str, int]
) -> None:
    """Lost, repeated and badly signed messages, against the deliveries' events."""
    messages = await _consume(url, queue, 60)
    received = Counter(m.message_id or "" for m in messages)
    wrong = [m for m in messages if not _signed(m)]
    o.expect(not wrong, f"{len(wrong)} message(s) badly signed")
    unknown = set(received) - set(events)
    o.expect(
        not unknown,
        f"{len(unknown)} message id(s) of no delivery, e.g. {min(unknown, default='')!r}",
    )
    o.delivered = len(set(received) & set(events))
    o.lost = len(events) - o.delivered
    o.expect(
        o.lost == 0,
        f"lost {o.lost} of {o.attempted}: e.g. {sorted(set(events) - set(received))[:3]}",
    )
    failed = await pool.fetch(
        "SELECT t.event_id::text AS event, a.error FROM notify_attempt a"
        " JOIN notify_task t ON t.id = a.task_id"
        " WHERE a.task_id = ANY($1::bigint[]) AND a.error IS NOT NULL",
        list(events.values()),
    )
    failed_events = {r["event"] for r in failed}
    repeats = {e: n - 1 for e, n in received.items() if n > 1}
    o.duplicated = sum(repeats.values())
    o.excused = sum(n for e, n in repeats.items() if e in failed_events)
    o.expect(
        o.duplicated == o.excused,
        f"{o.duplicated - o.excused} repeated message(s) of events none of whose attempts failed",
    )
    reasons = Counter(r["error"].split(":")[0][:60] for r in failed)
    o.notes.append(
        f"{len(messages)} messages in the queue for {len(events)} events; {len(failed)} failed"
        f" attempt(s) of {len(failed_events)} event(s): "
        + ", ".join(f"{k} x{v}" for k, v in reasons.most_common(4))
    )


def _signed(message: aio_pika.abc.AbstractMessage) -> bool:
    headers = {k: str(v) for k, v in message.headers.items()}
    try:
        Webhook(SECRET).verify(message.body, headers)
    except WebhookVerificationError:
        return False
    return True


async def broker_restart(run: Run, number: str, name: str) -> Outcome:
    return await broker_fault(run, number, name, hard=False)


async def broker_kill9(run: Run, number: str, name: str) -> Outcome:
    return await broker_fault(run, number, name, hard=True)
