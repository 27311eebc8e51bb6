"""Child processes of the harness: the API, the worker and the merchants.

Each runs in its own session (its own process group, which only it is in), with a
parent-death signal so that it dies with the harness even if the harness is killed with
SIGKILL. The harness signals them by their PID only. A supervised child that exits without
being asked to is recorded and started again, as a process supervisor would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]

# Runs first in each child: SIGKILL when the harness dies (PR_SET_PDEATHSIG = 1), unless the
# harness already died before that was set; then exec the real command in the same PID.
GUARD = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)

# Every child the harness started and has not yet seen exit: killed on any way out.
LIVE: dict[int, asyncio.subprocess.Process] = {}


def kill_all_now() -> None:
    """Last resort (finally / atexit): SIGKILL every child still running, by its PID."""
    for pid, proc in list(LIVE.items()):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        LIVE.pop(pid, None)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The harness's environment without any GROUPBUY_* setting of the caller (it must never
    point a child at another server), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


def _write_log(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


@dataclass
class Exit:
    at: float  # time.time()
    code: int
    expected: bool


@dataclass
class Child:
    """One command, (re)startable; its output appended to `log`."""

    name: str
    args: list[str]  # after `python`
    env: dict[str, str]
    log: Path
    supervise: bool = False
    restart_delay: float = 0.5
    proc: asyncio.subprocess.Process | None = None
    exits: list[Exit] = field(default_factory=list)
    starts: int = 0
    _asked: set[int] = field(default_factory=set)  # PIDs told to exit
    _watch: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def unexpected_exits(self) -> list[Exit]:
        return [e for e in self.exits if not e.expected]

    async def start(self) -> None:
        await self._spawn()
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_exits())

    async def _spawn(self) -> None:
        self.starts += 1
        _write_log(self.log, f"\n=== harness: start #{self.starts} at {time.time():.3f}\n")
        log = open_log(self.log)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", GUARD, str(os.getpid()), *self.args,
                env=self.env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        LIVE[self.proc.pid] = self.proc

    async def _watch_exits(self) -> None:
        """Records every exit; restarts a supervised child that exited unasked."""
        while self.proc is not None:
            proc = self.proc
            code = await proc.wait()
            LIVE.pop(proc.pid, None)
            expected = proc.pid in self._asked
            self.exits.append(Exit(time.time(), code, expected))
            _write_log(
                self.log, f"=== harness: exit {code} ({'asked' if expected else 'unasked'})\n"
            )
            if proc is not self.proc:
                continue  # the harness started it again meanwhile
            if expected or not self.supervise:
                return
            await asyncio.sleep(self.restart_delay)
            if self.proc is proc:  # else the harness started it meanwhile: watch that one
                if not self.supervise:
                    return
                await self._spawn()

    async def signal(self, sig: int) -> float:
        """Send `sig` (the child is expected to exit); returns time.time() when sent."""
        sent = time.time()
        if self.running:
            self._asked.add(self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
        return sent

    async def wait(self, seconds: float) -> int | None:
        """The exit code, or None if still running after `seconds`."""
        if self.proc is None:
            return None
        try:
            return await asyncio.wait_for(self.proc.wait(), seconds)
        except TimeoutError:
            return None

    async def kill9(self) -> float:
        sent = await self.signal(signal.SIGKILL)
        await self.wait(10)
        return sent

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL after `grace`; the exit code (None if it was not running)."""
        if not self.running:
            return None
        await self.signal(signal.SIGTERM)
        code = await self.wait(grace)
        if code is None:
            await self.signal(signal.SIGKILL)
            code = await self.wait(10)
        return code

    async def close(self) -> None:
        """Stop for good: no supervisor restart afterwards."""
        self.supervise = False
        await self.stop()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    def log_lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []


async def run_once(args: list[str], env: dict[str, str], log: Path, seconds: float) -> int:
    """Run a command to completion within `seconds` (killed after); its exit code."""
    child = Child("once", args, env, log)
    await child.start()
    code = await child.wait(seconds)
    if code is None:
        await child.kill9()
        return -9
    return code
