"""The harness's own PostgreSQL and Redis, from the embedded wheels, which it can stop, freeze
and start again on the same data directory and port.

The first start goes through groupbuy_async.dev.embedded (initdb, the service user when run
as root); restarts run the same server command again. Every signal goes to a PID read from
this run's own data directory (postmaster.pid, redis.pid) and checked against that process's
command line or working directory first: the machine's shared servers are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from yarl import URL

from groupbuy_async.dev.embedded import (
    EmbeddedServer,
    postgres_bin_dir,
    postgres_command,
    redis_binary,
    redis_command,
    start_postgres,
    start_redis,
)
from groupbuy_async.dev.host import HOST, service_user, spawn

from .pids import alive as _alive
from .pids import answers, cmdline, read_pid, until_ready
from .rabbit import PrivateRabbit

SHARED_PORTS = (5432, 6379)  # the machine's own servers: never ours
READY_SECONDS = 30.0
STOP_SECONDS = 20.0


class ServerError(RuntimeError):
    """A harness server could not be started, stopped or reached."""


def _cmdline(pid: int) -> str:
    return " ".join(cmdline(pid))


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _port_of(url: str) -> int:
    port = URL(url).port
    if port is None or port in SHARED_PORTS:
        raise ServerError(f"refusing to manage a server on {url}: not one the harness started")
    return port


async def _wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


class _Server:
    """What PostgreSQL and Redis share: the first incarnation from the embedded module,
    later ones spawned here; stop, restart, and a synchronous last-resort stop."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = ""
        self.port = 0
        self._embedded: EmbeddedServer | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.stops = 0

    def pid(self) -> int | None:
        raise NotImplementedError

    def is_ours(self, pid: int) -> bool:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def user(self) -> pwd.struct_passwd | None:
        return None

    def workdir(self) -> Path:
        raise NotImplementedError

    async def ready(self) -> bool:
        raise NotImplementedError

    def _signal(self, sig: int) -> int | None:
        pid = self.pid()
        if pid is None or not _alive(pid):
            return None
        if not self.is_ours(pid):
            raise ServerError(f"pid {pid} is not this harness's {self.name}; not signalling it")
        os.kill(pid, sig)
        return pid

    async def stop(self) -> float:
        """Stop the server (PostgreSQL: fast shutdown); returns the seconds it took."""
        began = time.monotonic()
        self.stops += 1
        self.thaw()
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
            return time.monotonic() - began
        proc, self._proc = self._proc, None
        pid = self._signal(self.stop_signal)
        if pid is not None and not await _wait_gone(pid, proc, STOP_SECONDS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await _wait_gone(pid, proc, 5)
        if proc is not None:
            proc.poll()
        return time.monotonic() - began

    async def restart(self) -> float:
        """Start again on the same data directory and port; returns the seconds until ready."""
        if self.running():
            raise ServerError(f"{self.name} is still running; stop it first")
        self._proc = spawn(
            self.command(), self.root / f"{self.name}.log", self.workdir(), self.user()
        )
        logs = str(self.root / f"{self.name}.log")
        return await until_ready(
            self.ready, self._proc, self.name, READY_SECONDS, logs, ServerError
        )

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid) and self.is_ours(pid)

    def freeze(self) -> list[int]:
        return []

    def thaw(self) -> None:
        pass

    def stop_now(self) -> None:
        """Synchronous, for cleanup on any exit: thaw, stop, and wait a little."""
        self.thaw()
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            embedded.stop()
            return
        proc, self._proc = self._proc, None
        with contextlib.suppress(ServerError, ProcessLookupError):
            pid = self._signal(self.stop_signal)
            if pid is not None:
                deadline = time.monotonic() + STOP_SECONDS
                while _alive(pid) and time.monotonic() < deadline:
                    if proc is not None and proc.poll() is not None:
                        break
                    time.sleep(0.05)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


class Postgres(_Server):
    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: SIGTERM would wait for every client

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.pgdata = root / "postgres"
        self.bin_dir = postgres_bin_dir()
        self._frozen: list[int] = []

    async def start(self) -> None:
        self._embedded = await asyncio.to_thread(start_postgres, self.root)
        self.url = self._embedded.url
        self.port = _port_of(self.url)

    def pid(self) -> int | None:
        return read_pid(self.pgdata / "postmaster.pid")

    def is_ours(self, pid: int) -> bool:
        return str(self.pgdata) in _cmdline(pid)

    def user(self) -> pwd.struct_passwd | None:
        return service_user()

    def workdir(self) -> Path:
        return self.pgdata

    def command(self) -> list[str]:
        return postgres_command(self.bin_dir, self.pgdata, self.port)

    async def ready(self) -> bool:
        try:
            conn = await asyncpg.connect(self.url, timeout=1)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        await conn.close()
        return True

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster, then every process it has forked; returns their PIDs."""
        pid = self._signal(signal.SIGSTOP)
        if pid is None:
            raise ServerError("PostgreSQL is not running: nothing to freeze")
        self._frozen = [pid]
        for child in _children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                self._frozen.append(child)
        return list(self._frozen)

    def thaw(self) -> None:
        frozen, self._frozen = self._frozen, []
        for pid in reversed(frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return str(URL(self.url).with_path(f"/{name}"))


class Redis(_Server):
    name = "redis"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.dir = root / "redis"
        self.binary = redis_binary()

    async def start(self) -> None:
        self._embedded = await asyncio.to_thread(start_redis, self.root)
        self.url = self._embedded.url
        self.port = _port_of(self.url)

    def url_for(self, db: int) -> str:
        return str(URL(self.url).with_path(f"/{db}"))

    def pid(self) -> int | None:
        return read_pid(self.dir / "redis.pid")

    def is_ours(self, pid: int) -> bool:
        return "redis-server" in _cmdline(pid) and _cwd(pid) == str(self.dir)

    def workdir(self) -> Path:
        return self.dir

    def command(self) -> list[str]:
        return redis_command(self.binary, self.dir, self.port)

    async def ready(self) -> bool:
        return await answers(HOST, self.port, b"PING\r\n", b"+PONG")


def clean_stale_runs(base: Path) -> list[str]:
    """Stop servers left by an earlier harness run that was killed before its cleanup ran
    (its PID, in the run directory's name, is gone), and remove those directories. Only
    processes whose command line or working directory is that run's data are signalled."""
    done: list[str] = []
    if not base.is_dir():
        return done
    for run in sorted(base.glob("run-*")):
        owner = run.name.removeprefix("run-").split("-")[0]
        if owner.isdigit() and _alive(int(owner)) and "tests.faults" in _cmdline(int(owner)):
            continue  # another harness run, still going
        rabbit = PrivateRabbit(run / "rabbitmq", "stale")
        if rabbit.pid() is not None:
            done.append(f"stopped the private RabbitMQ pid {rabbit.pid()} left by {run.name}")
        rabbit.stop_now()  # and its epmd
        for server in (Postgres(run), Redis(run)):
            pid = server.pid()
            if pid is not None and _alive(pid) and server.is_ours(pid):
                for frozen in (pid, *_children(pid)):  # it may have been left frozen
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(frozen, signal.SIGCONT)
                server.stop_now()
                done.append(f"stopped {server.name} pid {pid} left by {run.name}")
        shutil.rmtree(run, ignore_errors=True)
    return done


def watch(owner: int, base: Path) -> None:
    """The watchdog: once the harness `owner` is gone, however it ended (even SIGKILL),
    stop what it left running (clean_stale_runs). Normally the harness stops it first."""
    while _alive(owner):
        time.sleep(0.5)
    clean_stale_runs(base)


def start_watchdog(base: Path) -> subprocess.Popen[bytes]:
    """The watchdog in its own session, so that it outlives the harness."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.servers", "--watch", str(os.getpid()), str(base)],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--watch":
        watch(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit("usage: python -m tests.faults.servers --watch HARNESS_PID BASE_DIR")
