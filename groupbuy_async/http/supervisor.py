"""The API on more than one core: `api --processes N`.

The parent starts N API processes (`api --ready-fd FD`, each a whole API: its own pool,
session and dispatcher) one after another, each once the previous one listens. They share
GROUPBUY_HOST:GROUPBUY_PORT through SO_REUSEPORT: the kernel spreads new connections over
them. The parent serves nothing itself; it supervises:

- SIGTERM or SIGINT: forwarded (as SIGTERM) to every child, which finishes its in-flight
  requests and background callbacks; the parent exits 0 when all exited 0, else 1.
- A child that fails to start (its one-line error printed, exit 2): the children already
  started are stopped and the parent exits with that child's code.
- A child that dies while serving (a crash, the OOM killer, kill -9): one line, the others
  are stopped and the parent exits 1. It does not restart children itself: whatever
  supervises the parent (systemd, Kubernetes, compose `restart:`) restarts the whole group,
  as it restarts the worker, and a crash loop stays visible there.
"""

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable

from ..process.signals import on_stop_signals
from ..process.startup import warn_unsafe
from ..settings import Settings

log = logging.getLogger("groupbuy_async")

# Seconds a stopping child may take on top of its background callbacks' time limit.
STOP_GRACE_SECONDS = 15.0


async def supervise(settings: Settings, processes: int) -> int:
    """Run `processes` API processes until SIGTERM/SIGINT or one of them dies; the exit code."""
    children: list[asyncio.subprocess.Process] = []
    stop = asyncio.Event()
    grace = settings.notify_timeout_seconds + STOP_GRACE_SECONDS
    try:
        with on_stop_signals(stop.set):
            for _ in range(processes):
                failed = await _start_child(children)
                if failed is not None:  # it said why in one line; stop what was started
                    await _stop_all(children, grace)
                    return failed
                if stop.is_set():
                    break
            else:
                pids = ", ".join(str(c.pid) for c in children)
                where = f"http://{settings.host}:{settings.port}"
                log.info("API: %d processes (%s) serving %s", processes, pids, where)
                warn_unsafe(settings, api=True)
            return await _watch(children, stop, grace)
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def _start_child(children: list[asyncio.subprocess.Process]) -> int | None:
    """Start one API process and wait until it listens (None) or exits (its exit code)."""
    read_end, write_end = os.pipe()
    try:
        try:
            command = ("-m", "groupbuy_async", "api", "--ready-fd", str(write_end))
            child = await asyncio.create_subprocess_exec(
                sys.executable, *command, stdin=asyncio.subprocess.DEVNULL, pass_fds=(write_end,)
            )
        finally:
            os.close(write_end)
        children.append(child)
        # One byte once it listens; end of file when it exits first.
        ready = await asyncio.to_thread(os.read, read_end, 1)
    finally:
        os.close(read_end)
    return None if ready else await child.wait()


async def _watch(
    children: list[asyncio.subprocess.Process], stop: asyncio.Event, grace: float
) -> int:
    exits = {asyncio.ensure_future(child.wait()): child for child in children}
    stopping = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({*exits, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*exits, stopping):
            task.cancel()
    if stopping in done:
        codes = await _stop_all(children, grace)
        return 0 if all(code == 0 for code in codes) else 1
    for child in children:
        if child.returncode is not None:
            log.error(
                "API process %d exited with code %d while serving: stopping the other %d",
                child.pid,
                child.returncode,
                len(children) - 1,
            )
            break
    await _stop_all(children, grace)
    return 1


async def _stop_all(children: list[asyncio.subprocess.Process], grace: float) -> list[int]:
    """SIGTERM every running child, wait up to `grace` seconds, SIGKILL the rest."""
    for child in children:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
    waiting: list[Awaitable[int]] = [child.wait() for child in children]
    try:
        async with asyncio.timeout(grace):
            return list(await asyncio.gather(*waiting))
    except TimeoutError:
        log.error("API processes still running %.0fs after SIGTERM: killed", grace)
        for child in children:
            if child.returncode is None:
                child.kill()
        return [await child.wait() for child in children]
