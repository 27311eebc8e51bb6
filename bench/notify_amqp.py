"""bench-notify's broker scenario (issue 15): events/s published to RabbitMQ with publisher
confirms and `mandatory` (a broker endpoint, kind amqp), by Dispatcher.drain() as the worker
runs it, beside the HTTP figure of the same run (ours at 0 ms). A fresh database with `count`
due deliveries to one broker endpoint; a queue bound to its exchange and routing key; checked
afterwards: every delivery in status 1 and every event id consumed from the queue. Skipped,
saying why, when RabbitMQ (GROUPBUY_BENCH_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/)
cannot be reached."""

import os
import uuid
from typing import Any

import aio_pika

from groupbuy_async.callbacks.rules import BrokerTarget
from groupbuy_async.db import create_pool
from groupbuy_async.dev.outbox_fill import completed_teams
from groupbuy_async.merchants.secret_box import SecretBox

from .common import SECRET, SECRETS_KEY, fresh_database
from .notify_scenarios import bench_settings, timed_drain

AMQP_URL = os.environ.get("GROUPBUY_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def measure_amqp(admin_dsn: str, count: int, bound: int, http_rate: float | None) -> bool:
    """Print the broker scenario's line; False when a check failed (a skip is not one)."""
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as exc:
        print(f"broker scenario skipped: RabbitMQ not reachable ({type(exc).__name__}: {exc})")
        return True
    tag = uuid.uuid4().hex[:8]
    problems: list[str] = []
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            f"bench-{tag}", aio_pika.ExchangeType.DIRECT, auto_delete=True
        )
        queue = await channel.declare_queue(f"bench-{tag}", auto_delete=True)
        await queue.bind(exchange, routing_key="events")
        async with fresh_database(admin_dsn) as dsn:
            pool = await create_pool(dsn, 1, 40, command_timeout=600)
            try:
                box = SecretBox(SECRETS_KEY)
                target = BrokerTarget(exchange.name, "events")
                await completed_teams(pool, box, count, target, SECRET)
                await pool.execute("VACUUM ANALYZE event, notify_task")
                settings = bench_settings(dsn, bound).model_copy(update={"amqp_url": AMQP_URL})
                counts, seconds = await timed_drain(pool, settings)
                if counts.success_count != count:
                    problems.append(f"drain counted {counts.as_dict()}")
                rows = await pool.fetch(
                    "SELECT notify_status, count(*) FROM notify_task GROUP BY 1"
                )
                by_status = {int(r[0]): int(r[1]) for r in rows}
                if by_status != {1: count}:
                    problems.append(f"deliveries by status {by_status}, want {{1: {count}}}")
            finally:
                await pool.close()
        consumed = await _consume(queue, count)
        if len(consumed) != count:
            problems.append(f"{len(consumed)} distinct message ids consumed, want {count}")
    rate = count / seconds
    beside = (
        f", {rate / http_rate:.2f}x ours over HTTP at 0 ms ({http_rate:,.0f}/s)"
        if http_rate
        else ""
    )
    print(
        f"broker (amqp, confirms + mandatory): {count:,} events in {seconds:.2f}s ="
        f" {rate:,.0f}/s, bound {bound}{beside}; check: {'; '.join(problems) or 'ok'}"
    )
    return not problems


async def _consume(queue: Any, count: int) -> set[str]:
    ids: set[str] = set()
    async with queue.iterator(timeout=5) as messages:
        try:
            async for message in messages:
                async with message.process():
                    ids.add(str(message.message_id))
                if len(ids) >= count:
                    break
        except TimeoutError:
            pass
    return ids
