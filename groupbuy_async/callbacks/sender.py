"""Outbound callbacks: one shared ClientSession per process, signed POSTs, bounded reads.

Every failure of one attempt (timeout, DNS, refused, reset, blocked address) is caught
here, in one place, and turned into an AttemptOutcome: nothing escapes to the batch.
"""

import asyncio
import errno
import ipaddress
import math
import socket
import time
from dataclasses import dataclass

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from aiohttp_retry import ExponentialRetry, RetryClient

from .. import __version__
from ..settings import Settings
from .rules import AttemptOutcome, is_blocked_ip, sign, url_problem

BODY_CAP = 2048
# Within one attempt, only failures to connect are retried: the request was never sent,
# so the merchant still sees one request per attempt. The first try goes straight through
# the session (the common case pays nothing for the wrapper); aiohttp-retry takes over
# for the tries after a failed connect.
FIRST_RETRY_WAIT = 0.05
TRANSPORT_RETRY = ExponentialRetry(
    attempts=2,
    start_timeout=FIRST_RETRY_WAIT * 2,
    max_timeout=0.5,
    exceptions={aiohttp.ClientConnectorError},
    retry_all_server_errors=False,
)


class BlockedAddress(OSError):
    """The notifyUrl resolves to an address callbacks must not reach."""

    def __init__(self, host: str) -> None:
        super().__init__(errno.EACCES, f"{host} resolves only to blocked addresses")


def connect_address(host: str) -> str | None:
    """The address the kernel connects to for a socket address host, in canonical form:
    numeric forms the C library accepts ("127.1", "2130706433") are read as it reads them.
    None when the host is not numeric at all (never the case after resolution)."""
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


def public_socket(addr_info: AddrInfoType) -> socket.socket:
    """aiohttp's socket factory with the last word on SSRF: whatever the URL's form and
    however the host was resolved, a socket for a blocked address is never created."""
    family, type_, proto, _, sockaddr = addr_info
    address = connect_address(str(sockaddr[0]))
    if address is None or is_blocked_ip(address):
        raise BlockedAddress(str(sockaddr[0]))
    return socket.socket(family=family, type=type_, proto=proto)


class PublicOnlyResolver(AbstractResolver):
    """Resolves as usual, then drops loopback, private, link-local and metadata addresses."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if not is_blocked_ip(r["host"])]
        if not allowed:
            raise BlockedAddress(host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def webhook_headers(event_id: str, body: str, keys: tuple[bytes, ...]) -> dict[str, str]:
    """Standard Webhooks headers (webhook-id, -timestamp, -signature), for a POST and a
    broker message alike: one signature per key, space-separated (a receiver that knows any
    one of the secrets verifies)."""
    timestamp = int(time.time())
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(k, event_id, timestamp, body) for k in keys),
    }


def create_session(limit: int, per_host: int, block_private: bool) -> aiohttp.ClientSession:
    """Fairness and the breakers work per endpoint (delivery.py); the connector only caps the
    connections to one host:port, which endpoints of many merchants may share."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=per_host,
        resolver=PublicOnlyResolver() if block_private else None,
        socket_factory=public_socket if block_private else None,
        ttl_dns_cache=60,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": f"groupbuy-async/{__version__}"},
        auto_decompress=False,
    )


@dataclass
class Sender:
    session: aiohttp.ClientSession
    timeout: float
    block_private: bool = False

    def __post_init__(self) -> None:
        self._client = RetryClient(client_session=self.session, retry_options=TRANSPORT_RETRY)
        # Never rounded: aiohttp moves the deadline of a timeout above its ceil_threshold
        # (5 s by default) up to the loop's next whole second, up to 1 s late.
        self._timeout = aiohttp.ClientTimeout(total=self.timeout, ceil_threshold=math.inf)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Sender":
        """The process's sender, owning its one shared ClientSession (close() it at exit)."""
        session = create_session(
            settings.notify_concurrency, 4 * settings.notify_per_host, settings.notify_block_private
        )
        return cls(session, settings.notify_timeout_seconds, settings.notify_block_private)

    async def close(self) -> None:
        await self.session.close()

    @staticmethod
    def headers(event_id: str, body: str, keys: tuple[bytes, ...]) -> dict[str, str]:
        """The POST's headers: its content type and the Standard Webhooks ones."""
        return {"Content-Type": "application/json", **webhook_headers(event_id, body, keys)}

    async def send(
        self, url: str, event_id: str, body: str, keys: tuple[bytes, ...]
    ) -> AttemptOutcome:
        """One attempt, signed with each of `keys` (never unsigned: no key, no send)."""
        problem = url_problem(url, self.block_private)
        if problem:
            return AttemptOutcome(http_status=None, error=problem, permanent=True)
        if not keys:
            return AttemptOutcome(None, error="no signing secret", permanent=True)
        try:
            return await self._post(url, self.headers(event_id, body, keys), body)
        except TimeoutError:
            return AttemptOutcome(None, error=f"timeout after {self.timeout:g}s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                return AttemptOutcome(None, error=exc.os_error.strerror, permanent=True)
            return AttemptOutcome(None, error=_error_text(exc))
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return AttemptOutcome(None, error=_error_text(exc))

    async def _post(self, url: str, headers: dict[str, str], body: str) -> AttemptOutcome:
        """One limit for the whole attempt: the first try, the retries after a failed connect
        and the waits between them. The first try has it as its own total timeout, so the
        common case sets no second timer; the rest share what is left of it."""
        data = body.encode()
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            return await self._exchange(self.session, url, headers, data)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                raise
        async with asyncio.timeout_at(deadline):
            await asyncio.sleep(FIRST_RETRY_WAIT)
            return await self._exchange(self._client, url, headers, data)

    async def _exchange(
        self, client: aiohttp.ClientSession | RetryClient, url: str, headers: dict[str, str],
        data: bytes,
    ) -> AttemptOutcome:  # fmt: skip
        async with client.post(
            url, data=data, headers=headers, allow_redirects=False, timeout=self._timeout
        ) as resp:
            raw = await _read_capped(resp.content, BODY_CAP)
            return AttemptOutcome(
                http_status=resp.status,
                body=raw.decode("utf-8", "replace"),
                retry_after=resp.headers.get("Retry-After"),
            )


async def _read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    """Up to `cap` bytes of the body: read() alone may stop at a chunk boundary."""
    chunks: list[bytes] = []
    size = 0
    while size < cap and (chunk := await stream.read(cap - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
