"""The API as a process: listen, serve until SIGTERM/SIGINT, and its health check."""

import logging
import os
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from ..process.loop import loop_name
from ..process.reasons import reason
from ..process.signals import Stop, run_until_signalled
from ..process.startup import StartupError, reaching, warn_unsafe
from ..settings import Settings
from .app import create_app
from .routing import Route

log = logging.getLogger("groupbuy_async")


async def start_api(app: web.Application, settings: Settings, reuse_port: bool = False) -> Stop:
    """Run the app's startup (database pool, sender) and listen; StartupError when either
    fails, with what was opened closed again. `reuse_port`: share the port with the other
    API processes of `api --processes N` (SO_REUSEPORT)."""
    runner = web.AppRunner(app, access_log=None)
    try:
        with reaching("PostgreSQL", settings.database_url or ""):
            await runner.setup()
    except StartupError:
        await runner.cleanup()
        raise
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{settings.host}:{settings.port} (GROUPBUY_HOST/PORT)"
        raise StartupError(f"cannot listen on {where}: {reason(exc)}") from None
    log.info(
        "API listening on http://%s:%d (process %d, event loop %s)",
        settings.host,
        settings.port,
        os.getpid(),
        loop_name(),
    )
    return runner.cleanup


async def serve_api(
    settings: Settings, ready_fd: int | None = None, extra_routes: Sequence[Route] = ()
) -> None:
    """One API process until SIGTERM/SIGINT, serving `extra_routes` too. With `ready_fd` it
    is one of `api --processes N`: it shares the port and writes a byte to that pipe once it
    listens."""

    async def start() -> Stop:
        app = create_app(settings, extra_routes)
        stop = await start_api(app, settings, reuse_port=ready_fd is not None)
        # Said once it is up, so that a startup failure stays the only line printed (with
        # several processes, by their parent).
        if ready_fd is None:
            warn_unsafe(settings, api=True)
        else:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        return stop

    await run_until_signalled(start)


async def check_api(settings: Settings) -> int:
    """0 when the API's /readyz answers 200; 1, with one line saying why, otherwise."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}/readyz"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(url) as resp,
        ):
            if resp.status == 200:
                return 0
            log.warning("API health check failed: %s answered %d", url, resp.status)
            return 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("API health check failed: %s: %s", url, reason(exc))
        return 1
