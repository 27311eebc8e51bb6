"""`api --processes N`: N API processes share the port under a supervising parent."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import uuid
from typing import Any

import aiohttp

from groupbuy_async.settings import Settings

from ..conftest import ADMIN_TOKEN, SECRETS_KEY

NOISE = ("Traceback", "Task was destroyed", "Unclosed", "Exception ignored")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(settings: Settings, port: int) -> dict[str, str]:
    assert settings.database_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    return {
        **env,
        "GROUPBUY_DATABASE_URL": settings.database_url,
        "GROUPBUY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GROUPBUY_SECRETS_KEY": SECRETS_KEY,
        "GROUPBUY_PORT": str(port),
        "GROUPBUY_LOG_FORMAT": "json",
    }


class Group:
    """The parent process, its log lines as they come, and its children's pids."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").rstrip()
            self.raw.append(text)
            with contextlib.suppress(ValueError):  # a startup failure's plain line
                self.lines.append(json.loads(text))

    async def serving(self, seconds: float = 30) -> list[int]:
        """The children's pids, once the parent says they all serve."""
        async with asyncio.timeout(seconds):
            while not any(e["message"].startswith("API: ") for e in self.lines):
                assert self.proc.returncode is None, "\n".join(self.raw)
                await asyncio.sleep(0.05)
        return [e["pid"] for e in self.lines if e["message"].startswith("API listening on")]

    async def exit_code(self, seconds: float = 30) -> int:
        async with asyncio.timeout(seconds):
            code = await self.proc.wait()
            await self._reader
        return code

    def log(self) -> str:
        return "\n".join(self.raw)[-3000:]


async def _start(settings: Settings, port: int, processes: int) -> Group:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", "api", "--processes", str(processes),
        env=_env(settings, port), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    return Group(proc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_processes_share_the_port_and_stop_cleanly_on_sigterm(
    settings: Settings,
) -> None:
    port = _free_port()
    group = await _start(settings, port, 2)
    try:
        children = await group.serving()
        assert len(set(children)) == 2 and group.proc.pid not in children, group.log()
        ids = [uuid.uuid4().hex for _ in range(40)]
        # A new connection per request: the kernel picks a process per connection.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for rid in ids:
                url = f"http://127.0.0.1:{port}/readyz"
                async with http.get(url, headers={"X-Request-Id": rid}) as resp:
                    assert resp.status == 200, await resp.text()
    finally:
        group.proc.send_signal(signal.SIGTERM)
    assert await group.exit_code() == 0, group.log()
    answered_by = {e["pid"] for e in group.lines if e.get("request_id") in ids}
    assert answered_by == set(children), group.log()
    assert not any(_alive(pid) for pid in children)
    assert not any(noise in group.log() for noise in NOISE), group.log()


async def test_a_killed_process_stops_the_group_with_a_non_zero_exit(settings: Settings) -> None:
    group = await _start(settings, _free_port(), 2)
    try:
        victim, survivor = await group.serving()
        os.kill(victim, signal.SIGKILL)
        code = await group.exit_code()
    finally:
        if group.proc.returncode is None:
            group.proc.kill()
            await group.proc.wait()
    assert code == 1, group.log()
    said = [e["message"] for e in group.lines if e["level"] == "ERROR"]
    assert said == [f"API process {victim} exited with code -9 while serving: stopping the other 1"]
    assert not _alive(survivor)


async def test_a_startup_failure_is_one_line_and_its_exit_code(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        group = await _start(settings, port, 2)
        code = await group.exit_code()
    assert code == 2, group.log()
    assert len(group.raw) == 1, group.log()
    assert group.raw[0].startswith(f"groupbuy-async api: cannot listen on 127.0.0.1:{port} ")
