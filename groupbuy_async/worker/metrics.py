"""The worker's own /metrics (GROUPBUY_WORKER_METRICS_PORT): its compensation sends are not
seen by the API's. As the API's, it answers only `Authorization: Bearer <METRICS_TOKEN>`
(business volume is not for whoever reaches the port)."""

import asyncio
import hmac
import logging

import asyncpg
from aiohttp import web

from ..callbacks.metrics import Metrics
from ..db import DOWN
from ..process.startup import StartupError

log = logging.getLogger("groupbuy_async.worker")

# A scrape reads the outbox's counts within this long.
METRICS_DB_SECONDS = 5.0


def _allowed(request: web.Request, token: str | None) -> bool:
    given = request.headers.get("Authorization", "").encode("utf-8", "replace")
    return token is not None and hmac.compare_digest(given, f"Bearer {token}".encode())


async def serve_metrics(
    metrics: Metrics, pool: asyncpg.Pool, host: str, port: int, token: str | None
) -> web.AppRunner:
    """Listen on host:port (StartupError when it cannot); cleanup() the runner to stop.
    Without `token` every scrape is refused."""

    async def handler(request: web.Request) -> web.Response:
        if not _allowed(request, token):
            return web.Response(
                status=401, text="GROUPBUY_METRICS_TOKEN required as a bearer token\n"
            )
        try:
            async with asyncio.timeout(METRICS_DB_SECONDS):
                body = await metrics.scrape(pool)
        except DOWN:
            # The outbox's counts keep their last values; the rest says what is going on.
            body = metrics.render()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"worker metrics cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return runner
