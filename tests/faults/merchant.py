"""The harness's merchants, each its own process: groupbuy_async.dev.merchant (the healthy,
slow, failing and hanging ones; modes in its doc), and a hostile one, this module:

    python -m tests.faults.merchant [--redirect-to URL]

a raw TCP server whose path picks the misbehaviour (none ever says success): /garbage (random
bytes, not HTTP), /huge (200 announcing 1 GiB of body, streamed), /not-success (200 "ok"),
/error (500), /reset (TCP reset after reading the request), /trickle (200 whose body `success`
comes one byte per 0.3 s), /huge-headers (a 1 MiB header line), /redirect (302 to
--redirect-to, which a sender must not follow). It prints "PORT <n>" once it listens on
127.0.0.1; GET /_tally returns {"receipts": [...], "hugeBytes"}, receipts as dev.merchant's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from groupbuy_async.dev.merchant_process import MerchantProcess, Tallied
from groupbuy_async.process.signals import on_stop_signals

from .procs import GUARD, LIVE, ROOT, clean_env, open_log

HOSTILE_PATHS = (
    "garbage", "huge", "not-success", "error", "reset", "trickle", "huge-headers", "redirect",
)  # fmt: skip


@dataclass
class Hostile:
    redirect_to: str
    receipts: list[Tallied] = field(default_factory=list)
    huge_bytes_sent: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(30):
                await self._handle(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        await reader.readexactly(int(headers.get("content-length", "0")))
        if method == "GET" and path == "/_tally":
            body = json.dumps({"receipts": self.receipts, "hugeBytes": self.huge_bytes_sent})
            await _respond(writer, 200, body.encode(), "application/json")
            return
        self.receipts.append((headers.get("webhook-id", ""), time.time(), False, path, None))
        await self.misbehave(path.strip("/"), writer)

    async def misbehave(self, kind: str, writer: asyncio.StreamWriter) -> None:
        if kind == "garbage":
            writer.write(os.urandom(700))
        elif kind == "huge":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1073741824\r\n\r\n"
            )
            chunk = b"success " * 8192
            started = time.monotonic()
            while time.monotonic() - started < 5:  # until the sender hangs up
                writer.write(chunk)
                await writer.drain()
                self.huge_bytes_sent += len(chunk)
        elif kind == "not-success":
            await _respond(writer, 200, b"ok, thanks")
        elif kind == "error":
            await _respond(writer, 500, b"success")  # the right body, the wrong status
        elif kind == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif kind == "trickle":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\n"
            )
            for byte in b"success":
                await writer.drain()
                await asyncio.sleep(0.3)
                writer.write(bytes([byte]))
        elif kind == "huge-headers":
            writer.write(
                b"HTTP/1.1 200 OK\r\nX-Junk: "
                + b"a" * 1024**2
                + b"\r\nContent-Length: 7\r\n\r\nsuccess"
            )
        elif kind == "redirect":
            writer.write(
                b"HTTP/1.1 302 Found\r\nLocation: " + self.redirect_to.encode()
                + b"\r\nContent-Length: 0\r\n\r\n"
            )  # fmt: skip
        else:
            await _respond(writer, 404, b"no such misbehaviour")
        await writer.drain()


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, kind: str = "text/plain"
) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def serve_hostile(redirect_to: str) -> None:
    hostile = Hostile(redirect_to)
    server = await asyncio.start_server(hostile.handle, "127.0.0.1", 0, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        await stop.wait()
    server.close()


class Merchant(MerchantProcess):
    """A merchant process of the harness: in a session of its own, killed with the harness
    (GUARD), its stderr appended to `log`."""

    def __init__(
        self,
        name: str,
        log: Path,
        mode: str = "success",
        delay: float = 0.0,
        secret: str | None = None,
        hostile: bool = False,
        redirect_to: str = "",
        modes: Mapping[str, str] | None = None,
    ) -> None:
        if hostile:
            super().__init__("--redirect-to", redirect_to, module=__spec__.name, spawn=self._spawn)
        else:
            secret_args = ["--secret", secret] if secret else []
            per_path = [a for p, m in (modes or {}).items() for a in ("--mode-for", f"{p}={m}")]
            args = ("--mode", mode, "--delay", str(delay), *secret_args, *per_path)
            super().__init__(*args, spawn=self._spawn)
        self.name = name
        self.log = log

    async def _spawn(self, args: Sequence[str]) -> asyncio.subprocess.Process:
        log = open_log(self.log)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", GUARD, str(os.getpid()), *args, cwd=ROOT,
                env=clean_env({}), stdout=asyncio.subprocess.PIPE, stderr=log,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        LIVE[proc.pid] = proc
        return proc

    async def huge_bytes(self) -> int:
        """How much of its huge bodies a hostile merchant got to send."""
        return int((await self.tally()).get("hugeBytes", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--redirect-to", default="http://127.0.0.1:9/")
    asyncio.run(serve_hostile(parser.parse_args().redirect_to))


if __name__ == "__main__":
    main()
