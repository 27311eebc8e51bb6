"""Broker endpoints (kind amqp): events published to an exchange of the operator's RabbitMQ
(GROUPBUY_AMQP_URL) with aio-pika, as the HTTP ones are POSTed by sender.py.

One robust connection per process (aio-pika reconnects it after a broker restart), opened at
the first publish, and a pool of channels in publisher-confirm mode, each used by one publish
at a time: a channel the broker closes (a missing exchange) fails only the publish that made
it close, and is replaced, as are those a lost connection closed. Every publish is
`mandatory`: confirmed (routed to a queue) is a delivered attempt; a nack, an unroutable
return, a closed channel, a lost connection or the attempt's time limit is a failed one with
its reason, retried on the delivery's schedule.
Nothing escapes an attempt, as with Sender.send. A publish whose confirm was lost may have
been delivered: delivery is at least once, and message_id (= webhook-id = the event id)
lets a consumer deduplicate.
"""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from yarl import URL

from ..settings import Settings
from .rules import AttemptOutcome, BrokerAnswer, BrokerTarget
from .sender import webhook_headers

log = logging.getLogger(__name__)

NOT_CONFIGURED = "GROUPBUY_AMQP_URL is not set: no broker to publish to"
# How soon a lost broker connection is tried again (aio-pika's default is 5 s).
RECONNECT_SECONDS = 1.0


class Publisher:
    """The process's one broker publisher (close() it at exit)."""

    def __init__(self, url: str | None, timeout: float, max_channels: int = 100) -> None:
        """`max_channels`: publishes at once (each on a channel of its own)."""
        self._url = url
        self.timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._connecting: asyncio.Task[AbstractRobustConnection] | None = None
        self._idle: list[AbstractChannel] = []
        self._channels = asyncio.Semaphore(max_channels)
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "Publisher":
        return cls(settings.amqp_url, settings.notify_timeout_seconds, settings.notify_concurrency)

    @property
    def configured(self) -> bool:
        return self._url is not None

    async def publish(
        self,
        target: BrokerTarget,
        event_id: str,
        body: str,
        keys: tuple[bytes, ...],
        event_type: str | None = None,
    ) -> AttemptOutcome:
        """One attempt: publish the event, signed with each of `keys`, and wait for the
        broker's confirm, within the attempt's time limit."""
        if self._url is None:
            return AttemptOutcome(None, error=NOT_CONFIGURED)
        if not keys:
            return AttemptOutcome(None, error="no signing secret", permanent=True)
        message = aio_pika.Message(
            body.encode(),
            headers=dict(webhook_headers(event_id, body, keys)),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event_id,
            timestamp=datetime.now(UTC),
            type=event_type,
        )
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            async with asyncio.timeout(self.timeout), self._channels:
                channel = await self._take()
                keep = False
                try:
                    outcome = await self._publish(channel, target, message)
                    keep = outcome.broker is not BrokerAnswer.CLOSED
                    return outcome
                finally:
                    self._give_back(channel, keep)
        except TimeoutError:
            return AttemptOutcome(None, error=f"timeout after {self.timeout:g}s")
        except asyncio.CancelledError:
            # aiormq cancels the confirms a lost connection leaves pending: that is a failed
            # attempt. A cancel of this attempt itself is passed on.
            if task is None or task.cancelling() > cancelling:
                raise
            return AttemptOutcome(None, error="broker connection lost: the confirm was cancelled")
        except Exception as exc:  # never out of an attempt: it is recorded with its reason
            return AttemptOutcome(None, error=self._describe(exc))

    async def _publish(
        self, channel: AbstractChannel, target: BrokerTarget, message: aio_pika.Message
    ) -> AttemptOutcome:
        exchange = await channel.get_exchange(target.exchange, ensure=False)
        where = f"exchange {target.exchange!r} with routing key {target.routing_key!r}"
        try:
            await exchange.publish(message, target.routing_key, mandatory=True)
        except aiormq.exceptions.PublishError as exc:
            reply = exc.message.delivery if exc.message is not None else None
            text = getattr(reply, "reply_text", None) or "NO_ROUTE"
            return AttemptOutcome(
                None,
                error=f"unroutable: no queue bound for {where} ({text})",
                broker=BrokerAnswer.RETURNED,
            )
        except aiormq.exceptions.DeliveryError:
            return AttemptOutcome(
                None, error=f"nacked by broker (publishing to {where})", broker=BrokerAnswer.NACKED
            )
        except aiormq.exceptions.ChannelClosed as exc:
            return AttemptOutcome(
                None,
                error=f"channel closed by broker: {_reply(exc)} (publishing to {where})",
                broker=BrokerAnswer.CLOSED,
            )
        return AttemptOutcome(None, broker=BrokerAnswer.CONFIRMED)

    async def _take(self) -> AbstractChannel:
        """An idle channel of the pool, else a new one (the connection opened first)."""
        while self._idle:
            channel = self._idle.pop()
            if not channel.is_closed:
                return channel
            self._discard(channel)
        connection = await self._connect()
        await connection.ready()  # reconnecting after a lost connection: wait (time-limited)
        # A plain channel, not a robust one: the pool, not aio-pika, replaces the channels a
        # lost connection closes (a robust one would be reopened behind the pool's back).
        channel = aio_pika.Channel(connection, publisher_confirms=True, on_return_raises=True)
        await channel
        return channel

    def _give_back(self, channel: AbstractChannel, keep: bool) -> None:
        """Back to the pool; one that failed (its state unknown) is closed instead."""
        if keep and not self._closed and not channel.is_closed:
            self._idle.append(channel)
        else:
            self._discard(channel)

    def _discard(self, channel: AbstractChannel) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), self.timeout)

        closing = asyncio.create_task(close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _connect(self) -> AbstractRobustConnection:
        """The process's one connection; the first publish opens it (concurrent ones wait
        for that one connect; after a failed connect the next publish tries again). Once
        open, aio-pika reconnects it, and restores its channels, after a lost connection."""
        if self._connection is not None:
            return self._connection
        if self._closed:
            raise RuntimeError("the publisher is closed")
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._open())
            self._connecting.add_done_callback(_retrieved)
        return await asyncio.shield(self._connecting)

    async def _open(self) -> AbstractRobustConnection:
        assert self._url is not None
        connection = await aio_pika.connect_robust(
            self._url,
            timeout=self.timeout,
            reconnect_interval=RECONNECT_SECONDS,
            client_properties={"connection_name": "groupbuy-async publisher"},
        )
        if self._closed:
            await connection.close()
            raise RuntimeError("the publisher is closed")
        self._connection = connection
        return connection

    async def close(self) -> None:
        """Close the channels and the connection (publishes in flight fail)."""
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        idle, self._idle = self._idle, []
        for channel in idle:
            self._discard(channel)
        if self._closing:
            await asyncio.wait(self._closing, timeout=self.timeout)
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self.timeout)

    def _describe(self, exc: BaseException) -> str:
        """A failed publish's reason, never with the broker URL's password."""
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, aiormq.exceptions.AMQPConnectionError | ConnectionError | OSError):
            text = f"broker connection: {text}"
        return self._scrub(text)[:500]

    def _scrub(self, text: str) -> str:
        if self._url is None:
            return text
        url = URL(self._url)
        text = text.replace(self._url, str(url.with_password(None) if url.password else url))
        if url.password:
            text = text.replace(url.password, "***")
        return text


def _retrieved(task: "asyncio.Task[AbstractRobustConnection]") -> None:
    """A connect nobody waits for any more (their attempts timed out) fails quietly: the
    next publish tries again and reports it."""
    if not task.cancelled():
        task.exception()


def _reply(exc: aiormq.exceptions.ChannelClosed) -> str:
    """The broker's reply text (e.g. NOT_FOUND - no exchange 'x' in vhost '/')."""
    args = [a for a in exc.args if a]
    return " ".join(str(a) for a in args) or type(exc).__name__
