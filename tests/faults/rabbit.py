"""A private RabbitMQ server for the broker-restart tests, which they stop (SIGTERM: a clean
shutdown; SIGKILL: a crash) and start again on the same data directory and port.

Never the machine's shared broker: its own node name, AMQP, distribution and epmd ports
(free ones), its own epmd, its own config, plugins list, data, logs and Erlang cookie (HOME),
all under its root folder; not the Debian config /etc/rabbitmq (which names port 5672). It
runs the upstream start script (the /usr/sbin wrapper would switch to the rabbitmq user), in
a session of its own. Every signal goes to a process known to be this broker's: the node's
PID from its pid file, checked against that process's command line (its HOME); at cleanup,
every process whose environment has this folder's HOME.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from groupbuy_async.dev.host import HOST, free_port

from .pids import alive as _alive
from .pids import answers, read_pid, until_ready
from .pids import cmdline as _cmdline

# The upstream start script; /usr/sbin/rabbitmq-server runs it (as user rabbitmq under root).
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
READY_SECONDS = 60.0
STOP_SECONDS = 30.0
SHARED_PORTS = (5672, 25672, 4369)  # the machine's broker, its distribution port, its epmd
# The first bytes a broker answers the AMQP 0-9-1 protocol header with: a method frame on
# channel 0 (connection.start).
_HEADER = b"AMQP\x00\x00\x09\x01"
_START = b"\x01\x00\x00"


class RabbitError(RuntimeError):
    """The private broker could not be started, stopped or reached."""


def missing() -> str | None:
    """Why no private broker can be started here, or None."""
    if not SERVER.exists():
        return f"RabbitMQ is not installed ({SERVER} missing; apt-get install rabbitmq-server)"
    if shutil.which("epmd") is None:
        return "epmd (Erlang) is not on PATH"
    return None


def _free_port() -> int:
    while (port := free_port()) in SHARED_PORTS:
        pass
    return port


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cmd` in a session of its own (a terminal's Ctrl-C is not for it), output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, env=env, cwd=log.parent, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class PrivateRabbit:
    """`await start()` once; then stop() / kill9() and restart() as often as wanted;
    stop_now() (synchronous) at the end, whatever happened."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.node = f"{name}@localhost"
        self.home = root / "home"  # the Erlang cookie
        self.port = 0
        self.log = root / "server.log"
        self._script: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        ports = (self.root / "ports").read_text().split()
        self.port, dist, epmd = (int(p) for p in ports)
        return {
            **env,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "ERL_EPMD_PORT": str(epmd),
            "ERL_EPMD_ADDRESS": HOST,
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    async def start(self) -> float:
        """Set up the folder, start its epmd and the broker; the seconds until ready."""
        for sub in ("home", "mnesia", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        port, dist, epmd = _free_port(), _free_port(), _free_port()
        (self.root / "ports").write_text(f"{port} {dist} {epmd}\n")
        (self.root / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
        (self.root / "rabbitmq.conf").write_text(f"listeners.tcp.1 = {HOST}:{port}\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        env = self._env()
        self._epmd = _spawn(["epmd", "-port", str(epmd)], env, self.root / "epmd.log")
        deadline = time.monotonic() + 10
        while not await _listening(epmd):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise RabbitError(f"the private epmd did not start; see {self.root / 'epmd.log'}")
            await asyncio.sleep(0.05)
        return await self.restart()

    def pid(self) -> int | None:
        """The broker's (beam.smp) PID, while it runs."""
        pid = read_pid(self.root / "rabbitmq.pid")
        return pid if pid is not None and _alive(pid) and self.is_ours(pid) else None

    def is_ours(self, pid: int) -> bool:
        args = _cmdline(pid)
        return any(a.endswith("beam.smp") for a in args[:1]) and str(self.home) in args

    def running(self) -> bool:
        return self.pid() is not None

    async def ready(self) -> bool:
        """The broker answers the AMQP protocol header (its listener is the last to start)."""
        return await answers(HOST, self.port, _HEADER, _START)

    async def restart(self) -> float:
        """Start the broker (again, on the same node name, data and port); the seconds until
        it accepts connections."""
        began = time.monotonic()
        if self.running():
            raise RabbitError("the private broker is still running; stop it first")
        (self.root / "rabbitmq.pid").unlink(missing_ok=True)
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"\n=== start #{self.starts} at {time.time():.3f}\n")
        self._script = _spawn([str(SERVER)], self._env(), self.log)
        logs = f"{self.log} and {self.root / 'log'}"
        await until_ready(
            self.ready, self._script, "rabbitmq-server", READY_SECONDS, logs, RabbitError
        )
        return time.monotonic() - began

    async def stop(self, sig: int = signal.SIGTERM) -> float:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash) to the broker; the seconds until
        it is gone. Past STOP_SECONDS a SIGTERM is followed by a SIGKILL."""
        began = time.monotonic()
        pid = self.pid()
        if pid is None:
            raise RabbitError("the private broker is not running")
        os.kill(pid, sig)
        while _alive(pid):
            if time.monotonic() - began > STOP_SECONDS:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.02)
        took = time.monotonic() - began
        await asyncio.to_thread(self._reap)
        return took

    async def kill9(self) -> float:
        return await self.stop(signal.SIGKILL)

    def _reap(self) -> None:
        """The start script ends once the broker has (it waits for it)."""
        script, self._script = self._script, None
        if script is not None:
            try:
                script.wait(5)
            except subprocess.TimeoutExpired:
                script.kill()
                script.wait(5)

    def _processes(self) -> list[int]:
        """Every process of this broker: each has this folder's HOME in its environment (the
        start script, the broker, its helpers, its epmd, and an `epmd -daemon` a broker may
        start when its epmd is gone), whether or not its PID was written down yet."""
        mine = f"HOME={self.home}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/environ", "rb") as f:
                    if mine in f.read().split(b"\0") and _alive(int(entry)):
                        found.append(int(entry))
        return found

    def stop_now(self) -> None:
        """Synchronous, for cleanup on any exit: the broker first (SIGTERM, SIGKILL past
        STOP_SECONDS), while its epmd still runs (one without starts another), then whatever
        else of it is left (its start script, its epmd). Works from the folder alone (a stale
        run's, too), and on a broker still starting (its PID not yet written down)."""
        for _ in range(5):
            left = self._processes()
            if not left:
                break
            brokers = [pid for pid in left if self.is_ours(pid)]
            _terminate(brokers or left, STOP_SECONDS if brokers else 5)
            self._reap()
        for proc in (self._script, self._epmd):
            with contextlib.suppress(subprocess.TimeoutExpired):
                if proc is not None:
                    proc.wait(5)
        self._script = self._epmd = None


def _terminate(pids: list[int], seconds: float) -> None:
    """SIGTERM, and SIGKILL to those still running after `seconds`."""
    for sig, wait in ((signal.SIGTERM, seconds), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_alive(pid) for pid in pids):
            return
