"""Command line: python -m groupbuy_async {api,worker,migrate,dev,notify}."""

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .logs import setup_logging
from .settings import Settings

log = logging.getLogger("groupbuy_async")


def _require(settings: Settings, *names: str) -> None:
    missing = [f"GROUPBUY_{n.upper()}" for n in names if not getattr(settings, n)]
    if missing:
        sys.exit(f"{', '.join(missing)} must be set (or run `python -m groupbuy_async dev`)")


async def run_until_signalled(
    start: Callable[[], Awaitable[Callable[[], Awaitable[None]]]],
) -> None:
    """Start something, wait for SIGINT/SIGTERM, then run the stop it returned."""
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    stop = await start()
    try:
        await stop_event.wait()
    finally:
        log.info("stopping")
        await stop()


async def _worker(settings: Settings) -> None:
    from .worker import build_worker

    worker = build_worker(settings)

    async def start() -> Callable[[], Awaitable[None]]:
        task = asyncio.create_task(worker.main())

        async def stop() -> None:
            await worker.close()
            task.cancel()

        return stop

    await run_until_signalled(start)


async def _notify(settings: Settings, team_id: str | None) -> dict[str, int]:
    """The original's execSettlementNotifyJob([teamId]) as a one-shot command."""
    from .worker import shutdown, startup

    ctx: dict[str, Any] = {"settings": settings}
    await startup(ctx)
    try:
        return (await ctx["dispatcher"].drain(team_id)).as_dict()  # type: ignore[no-any-return]
    finally:
        await shutdown(ctx)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="groupbuy_async", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser("worker", help="run the arq worker (team expiry, callback compensation)")
    sub.add_parser("migrate", help="apply sql/NNN_*.sql migrations not yet applied")
    sub.add_parser("dev", help="embedded servers, migrations, demo data, API and worker")
    notify = sub.add_parser("notify", help="deliver due callbacks now and print the counts")
    notify.add_argument("--team-id", help="only this team's task")
    args = parser.parse_args(argv)

    settings = Settings()
    setup_logging(settings.log_format, settings.log_level)

    if args.command == "api":
        from .app import create_app

        _require(settings, "database_url", "redis_url")
        log.info("API listening on http://%s:%d", settings.host, settings.port)
        web.run_app(
            create_app(settings), host=settings.host, port=settings.port, access_log=None,
            print=None,
        )  # fmt: skip
    elif args.command == "worker":
        _require(settings, "database_url", "redis_url")
        asyncio.run(_worker(settings))
    elif args.command == "migrate":
        from .db import migrate

        _require(settings, "database_url")
        assert settings.database_url
        applied = asyncio.run(migrate(settings.database_url))
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    elif args.command == "notify":
        _require(settings, "database_url")
        print(json.dumps(asyncio.run(_notify(settings, args.team_id))))
    elif args.command == "dev":
        from .dev import run_dev

        asyncio.run(run_dev(settings))


if __name__ == "__main__":
    main()
