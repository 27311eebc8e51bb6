"""Broker endpoints (kind amqp) against a real RabbitMQ (GROUPBUY_TEST_AMQP_URL, else
amqp://guest:guest@127.0.0.1:5672/; these tests are skipped, saying so, when it cannot be
reached): a published event verifies as an HTTP one does; a nack-like refusal (unroutable, no
such exchange) is a failed attempt with its reason; a lost connection loses no delivery.
Without a broker url, or with one that cannot be reached, an attempt fails saying why."""

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from standardwebhooks import Webhook
from yarl import URL

from groupbuy_async.callbacks.amqp import NOT_CONFIGURED, Publisher
from groupbuy_async.callbacks.rules import BrokerTarget, unreachable

from ..conftest import SECRET, Api, make_tasks, start_client
from ..e2e.test_endpoints import MERCHANTS, _shop, _team
from .test_delivery import attempts, task_row

AMQP_URL = os.environ.get("GROUPBUY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
_BROKER = URL(AMQP_URL)


def _unreachable() -> str | None:
    try:
        socket.create_connection((_BROKER.host or "127.0.0.1", _BROKER.port or 5672), 1).close()
    except OSError as exc:
        return f"RabbitMQ not reachable at {_BROKER.host}:{_BROKER.port} ({exc})"
    return None


_WHY = _unreachable()
needs_broker = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")


async def test_a_publisher_without_a_broker_url_fails_each_attempt_saying_so() -> None:
    publisher = Publisher(None, timeout=1.0)
    outcome = await publisher.publish(BrokerTarget("x", "k"), "id", "{}", (b"k" * 32,))
    assert (outcome.error, outcome.broker, outcome.permanent) == (NOT_CONFIGURED, None, False)
    assert "GROUPBUY_AMQP_URL is not set" in NOT_CONFIGURED
    await publisher.close()


async def test_a_failed_connect_is_a_failed_attempt_that_never_shows_the_password() -> None:
    publisher = Publisher("amqp://user:s3cr3t-pw@127.0.0.1:1/vhost", timeout=2.0)
    outcome = await publisher.publish(BrokerTarget("x", "k"), "id", "{}", (b"k" * 32,))
    assert outcome.broker is None and outcome.error is not None and unreachable(outcome)
    assert "s3cr3t-pw" not in outcome.error, outcome.error
    leaked = publisher._describe(OSError("amqp://user:s3cr3t-pw@127.0.0.1:1/vhost refused"))
    assert "s3cr3t-pw" not in leaked and "127.0.0.1:1" in leaked, leaked
    await publisher.close()


class Broker:
    """The consumer's side: exchanges with a queue bound, made for one test, deleted after."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel
        self.exchanges: list[aio_pika.abc.AbstractExchange] = []

    async def bound(
        self, routing_key: str, arguments: dict[str, Any] | None = None
    ) -> tuple[str, AbstractQueue]:
        name = f"groupbuy-test-{uuid.uuid4().hex[:12]}"
        exchange = await self.channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT)
        self.exchanges.append(exchange)
        queue = await self.channel.declare_queue(exclusive=True, arguments=arguments)
        await queue.bind(exchange, routing_key)
        return name, queue


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        made = Broker(await connection.channel())
        yield made
        for exchange in made.exchanges:
            await exchange.delete()
    finally:
        await connection.close()


async def consume(queue: AbstractQueue, at_least: int, seconds: float = 5) -> list[Any]:
    """What the queue holds once `at_least` messages came (and a moment more passed)."""
    got: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(seconds):
        while len(got) < at_least:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.02)
            else:
                got.append(message)
    await asyncio.sleep(0.2)
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        got.append(message)
    return got


@needs_broker
async def test_a_broker_endpoint_gets_the_event_signed_as_a_webhook(
    pool: asyncpg.Pool, make_dispatcher: Any, broker: Broker
) -> None:
    exchange, queue = await broker.bound("shop.events")
    dispatcher = make_dispatcher(amqp_url=AMQP_URL)
    (team_id,) = await make_tasks(pool, 1, BrokerTarget(exchange, "shop.events"))
    counts = await dispatcher.drain(team_id)
    assert counts.success_count == 1
    (message,) = await consume(queue, 1)
    task = await task_row(pool, team_id)
    assert message.message_id == message.headers["webhook-id"] == str(task["event_id"])
    assert message.body.decode() == task["parameter_json"]
    envelope = Webhook(SECRET).verify(message.body, message.headers)  # raises if forged
    assert envelope["type"] == "team.completed" and envelope["data"]["teamId"] == team_id
    assert message.content_type == "application/json" and message.type == "team.completed"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (task["notify_status"], task["notify_count"]) == (1, 1)
    assert (task["last_http_status"], task["last_error"]) == (None, None)
    (attempt,) = await attempts(pool, team_id)
    assert (attempt["http_status"], attempt["error"], attempt["response_body"]) == (None,) * 3


@needs_broker
async def test_unroutable_and_missing_exchange_are_failed_attempts_and_the_next_publish_works(
    pool: asyncpg.Pool, make_dispatcher: Any, broker: Broker
) -> None:
    exchange, queue = await broker.bound("bound")
    dispatcher = make_dispatcher(amqp_url=AMQP_URL, notify_retry_schedule="1h")
    (unroutable,) = await make_tasks(pool, 1, BrokerTarget(exchange, "bound-to-nothing"))
    (missing,) = await make_tasks(pool, 1, BrokerTarget(f"{exchange}-missing", "bound"))
    (fine,) = await make_tasks(pool, 1, BrokerTarget(exchange, "bound"))
    assert (await dispatcher.drain(unroutable)).retry_count == 1
    task = await task_row(pool, unroutable)
    assert task["notify_status"] == 2 and task["last_error"].startswith("unroutable: "), task
    assert "bound-to-nothing" in task["last_error"] and "NO_ROUTE" in task["last_error"]
    assert (await dispatcher.drain(missing)).retry_count == 1
    task = await task_row(pool, missing)
    assert task["notify_status"] == 2, task
    assert "channel closed by broker: NOT_FOUND" in task["last_error"], task["last_error"]
    # The channel the broker closed is replaced: the next publish is confirmed.
    assert (await dispatcher.drain(fine)).success_count == 1
    (message,) = await consume(queue, 1)
    assert message.message_id == str((await task_row(pool, fine))["event_id"])


@needs_broker
async def test_a_nack_is_a_failed_attempt(
    pool: asyncpg.Pool, make_dispatcher: Any, broker: Broker
) -> None:
    # A full queue that rejects publishes: the broker nacks them.
    full = {"x-max-length": 0, "x-overflow": "reject-publish"}
    exchange, _ = await broker.bound("rk", arguments=full)
    dispatcher = make_dispatcher(amqp_url=AMQP_URL, notify_retry_schedule="1h")
    (team_id,) = await make_tasks(pool, 1, BrokerTarget(exchange, "rk"))
    assert (await dispatcher.drain(team_id)).retry_count == 1
    task = await task_row(pool, team_id)
    assert task["notify_status"] == 2 and task["last_error"].startswith("nacked by broker")


async def test_without_a_broker_url_an_attempt_fails_saying_so(
    pool: asyncpg.Pool, make_dispatcher: Any
) -> None:
    dispatcher = make_dispatcher(notify_retry_schedule="1h")
    (team_id,) = await make_tasks(pool, 1, BrokerTarget("anything", "at-all"))
    assert (await dispatcher.drain(team_id)).retry_count == 1
    task = await task_row(pool, team_id)
    assert task["notify_status"] == 2 and "GROUPBUY_AMQP_URL is not set" in task["last_error"]


@needs_broker
async def test_an_endpoint_made_over_the_api_gets_a_completed_team_and_a_ping(
    api: Api, settings: Any, pool: asyncpg.Pool, broker: Broker
) -> None:
    exchange, queue = await broker.bound("rk")
    client = await start_client(settings.model_copy(update={"amqp_url": AMQP_URL}))
    try:
        own = await Api.for_client(client)
        shop, (pair,) = await _shop(own)
        path = f"{MERCHANTS}/{shop.merchant_id}/endpoints/bus"
        body = {"kind": "amqp", "exchange": exchange, "routingKey": "rk", "secret": SECRET}
        status, env = await own.call("PUT", path, body, admin=True)
        assert status == 200, env
        status, env = await own.call("POST", f"{path}/ping", None, admin=True)
        assert status == 200 and env["data"]["success"] is True, env
        assert env["data"]["httpStatus"] is None and env["data"]["error"] is None
        (ping,) = await consume(queue, 1)
        assert Webhook(SECRET).verify(ping.body, ping.headers)["type"] == "ping"
        team_id = await _team(shop, pair)  # settled: sent at once by the API process
        messages = await consume(queue, 1)
        events = {
            str(r["event_id"]): r["notify_status"]
            for r in await pool.fetch(
                "SELECT t.event_id, t.notify_status FROM notify_task t"
                " JOIN endpoint ep ON ep.id = t.endpoint"
                " WHERE t.team_id = $1 AND ep.endpoint_id = 'bus'",
                team_id,
            )
        }
        assert [m.message_id for m in messages] == list(events)
        for message in messages:
            Webhook(SECRET).verify(message.body, message.headers)
        async with asyncio.timeout(5):
            while set(events.values()) != {1}:
                await asyncio.sleep(0.05)
                events = {
                    e: await pool.fetchval(
                        "SELECT notify_status FROM notify_task WHERE event_id = $1::uuid"
                        " AND endpoint = (SELECT id FROM endpoint WHERE endpoint_id = 'bus'"
                        " AND merchant_id = $2)",
                        e,
                        shop.merchant_id,
                    )
                    for e in events
                }
    finally:
        await client.close()


class Proxy:
    """A TCP proxy between the publisher and RabbitMQ that a test cuts: it can hold back
    the broker's answers (confirms), drop every connection and refuse new ones."""

    def __init__(self) -> None:
        self.links: set[asyncio.StreamWriter] = set()
        self.refusing = False
        self.holding = asyncio.Event()
        self.holding.set()  # set: answers flow
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return str(_BROKER.with_host("127.0.0.1").with_port(port))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(_BROKER.host, _BROKER.port)
        self.links |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, None),
            self._pipe(up_reader, writer, self.holding),
            return_exceptions=True,
        )
        self.links -= {writer, up_writer}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        """Every connection dropped at once, as a broker restart drops them; new ones are
        refused until restore()."""
        self.refusing = True
        for writer in list(self.links):
            writer.transport.abort()
        self.holding.set()

    def restore(self) -> None:
        self.refusing = False

    async def close(self) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    made = Proxy()
    await made.start()
    yield made
    await made.close()


async def _statuses(pool: asyncpg.Pool, team_ids: list[str]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT team_id, notify_status FROM notify_task WHERE team_id = ANY($1::text[])", team_ids
    )
    return {r["team_id"]: r["notify_status"] for r in rows}


@needs_broker
async def test_a_lost_broker_connection_loses_no_delivery(
    pool: asyncpg.Pool, make_dispatcher: Any, broker: Broker, proxy: Proxy
) -> None:
    exchange, queue = await broker.bound("rk")
    dispatcher = make_dispatcher(
        amqp_url=proxy.url, notify_retry_schedule=",".join(["0.2s"] * 40),
        notify_timeout_seconds=3,
    )  # fmt: skip
    # Attempts cut short are unanswered: the endpoint's breaker pauses it (1 s here, not 30).
    breakers = dispatcher.delivery.breakers
    breakers.policy = replace(breakers.policy, pause=timedelta(seconds=1))
    team_ids = await make_tasks(pool, 60, BrokerTarget(exchange, "rk"))
    first, cut_short = team_ids[:20], team_ids[20:40]  # the last 20 after the cut
    await asyncio.gather(*(dispatcher.drain(t) for t in first))
    assert set((await _statuses(pool, first)).values()) == {1}
    # The broker gets these publishes (and routes them) but its confirms are held back, then
    # the connection drops: attempts that may well have been delivered fail, to be repeated.
    proxy.holding.clear()
    sending = asyncio.gather(*(dispatcher.drain(t) for t in cut_short))
    await asyncio.sleep(0.5)
    proxy.cut()
    await asyncio.sleep(1.0)  # refused meanwhile: reconnects fail, as while a broker restarts
    proxy.restore()
    await sending
    # Those in flight at the cut failed; those still waiting for a send slot then waited for
    # the reconnect (within their time limit) and may have been confirmed.
    cut_short_statuses = await _statuses(pool, cut_short)
    assert 2 in cut_short_statuses.values(), cut_short_statuses
    async with asyncio.timeout(60):
        while set((statuses := await _statuses(pool, team_ids)).values()) != {1}:
            await asyncio.gather(*(dispatcher.drain(t) for t, s in statuses.items() if s != 1))
            await asyncio.sleep(0.2)
    events = {
        str(r["event_id"])
        for r in await pool.fetch(
            "SELECT event_id FROM notify_task WHERE team_id = ANY($1::text[])", team_ids
        )
    }
    messages = await consume(queue, len(events), seconds=10)
    assert {m.message_id for m in messages} == events  # at least once each, none lost
    failed = await pool.fetch(
        "SELECT a.error FROM notify_attempt a JOIN notify_task t ON t.id = a.task_id"
        " WHERE t.team_id = ANY($1::text[]) AND a.error IS NOT NULL",
        team_ids,
    )
    assert failed and all(r["error"] for r in failed)  # failed attempts, with their reasons
    print(
        f"{len(messages)} messages for {len(events)} events"
        f" ({len(messages) - len(events)} repeated), {len(failed)} failed attempts:"
        f" {sorted({r['error'][:150] for r in failed})}"
    )
