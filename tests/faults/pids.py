"""The harness's own processes, as /proc shows them, and waiting for a server it started
to accept connections."""

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def read_pid(path: Path) -> int | None:
    """The number a pid file holds; None when there is none."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


async def answers(host: str, port: int, send: bytes, expect: bytes) -> bool:
    """True when a server at host:port answers `send` with bytes that start with `expect`."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(send)
        return (await asyncio.wait_for(reader.read(64), 2)).startswith(expect)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def until_ready(
    ready: Callable[[], Awaitable[bool]],
    proc: subprocess.Popen[bytes],
    what: str,
    seconds: float,
    logs: str,
    error: type[Exception],
) -> float:
    """Until `ready()`, polling; `error` if `proc` exits first (see `logs`) or after
    `seconds`. Returns the seconds it took."""
    began = time.monotonic()
    while not await ready():
        if proc.poll() is not None:
            raise error(f"{what} exited with {proc.returncode}; see {logs}")
        if time.monotonic() - began > seconds:
            raise error(f"{what} not ready after {seconds:.0f}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - began
