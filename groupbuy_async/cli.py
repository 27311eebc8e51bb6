"""Command line: groupbuy-async {api,worker,migrate,notify,health,dev} (python -m groupbuy_async
is the same).

Settings come from GROUPBUY_* environment variables (`VERB --help` lists each verb's). A bad
setting, an unreachable server or a taken port is one line on stderr and exit code 2.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

from .errors import TeamNotFound
from .logs import setup_logging
from .process.startup import StartupError
from .settings import ENV_PREFIX, Settings, SettingsError, load_settings, require

log = logging.getLogger("groupbuy_async")

PROG = "groupbuy-async"

_LOGS = ("log_format", "log_level")
_NOTIFY = (
    "secrets_key",
    "notify_accept_any_2xx",
    "notify_retry_schedule",
    "notify_timeout_seconds",
    "notify_concurrency",
    "notify_per_host",
    "notify_batch_size",
    "notify_block_private",
    "endpoint_disable_after_seconds",
    "endpoint_disable_min_attempts",
    "amqp_url",
)
_POOL = ("db_pool_min", "db_pool_max", "db_acquire_timeout_seconds", "db_command_timeout_seconds")
VERBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "api": (
        "run the HTTP API (needs PostgreSQL)",
        (
            "database_url",
            "host",
            "port",
            "admin_token",
            "sc_blacklist",
            *_POOL,
            *_NOTIFY,
            "notify_immediate_limit",
            "mock_merchant",
            *_LOGS,
            "api_event_loop",
        ),
    ),
    "worker": (
        "run the arq worker: team expiry, unpaid timeout, callback compensation, retention"
        " (needs PostgreSQL and Redis)",
        (
            "database_url",
            "redis_url",
            "queue_name",
            "fail_teams_cron_seconds",
            "close_unpaid_cron_seconds",
            "notify_cron_seconds",
            *_NOTIFY,
            *_POOL,
            "retention_days",
            "prune_cron_seconds",
            "worker_max_outage_seconds",
            "worker_metrics_port",
            "host",
            *_LOGS,
        ),
    ),
    "migrate": ("apply the schema migrations not yet applied", ("database_url", *_LOGS)),
    "dev": (
        "local demo: embedded servers when unset, migrations, demo data, API and worker;"
        " GROUPBUY_SECRETS_KEY generated once and kept under GROUPBUY_DATA_DIR unless set",
        (
            "database_url",
            "redis_url",
            "data_dir",
            "host",
            "port",
            "admin_token",
            "secrets_key",
            *_LOGS,
        ),
    ),
    "notify": (
        "deliver due callbacks now and print the counts",
        ("database_url", *_NOTIFY, *_POOL, *_LOGS),
    ),
    "health": (
        "exit 0 when the API answers /readyz, or this host's workers are alive and not stale",
        ("host", "port", "redis_url", "queue_name"),
    ),
}


def settings_help(names: tuple[str, ...]) -> str:
    lines = ["settings (environment variables):"]
    for name in names:
        field = Settings.model_fields[name]
        default = field.default
        if isinstance(default, tuple | frozenset):
            shown = ""
        else:
            shown = f" [default: {'unset' if default is None else str(default).lower()}]"
        lines.append(f"  {ENV_PREFIX}{name.upper()}{shown}\n      {field.description}")
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for verb, (summary, names) in VERBS.items():
        p = sub.add_parser(
            verb,
            help=summary,
            description=summary,
            epilog=settings_help(names),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if verb == "notify":
            p.add_argument(
                "--team-id", help="only this team's callbacks (exit code 1: no such team)"
            )
        if verb == "health":
            p.add_argument("process", choices=["api", "worker"])
        if verb == "dev":
            once = p.add_mutually_exclusive_group()
            once.add_argument(
                "--stop",
                action="store_true",
                help="stop the embedded servers running on GROUPBUY_DATA_DIR (left by a killed"
                " dev; make stop), then exit",
            )
            once.add_argument(
                "--reset",
                action="store_true",
                help="delete GROUPBUY_DATA_DIR (make reset-data); refused while its servers run",
            )
        if verb == "api":
            p.add_argument(
                "--processes",
                type=_positive,
                default=1,
                metavar="N",
                help="N API processes sharing the port (SO_REUSEPORT) under one supervising"
                " parent (default 1: this process serves)",
            )
            # Set by that parent for each of its processes: signal readiness on this pipe.
            p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_format, settings.log_level)
        _run(args, settings)
    except (SettingsError, StartupError) as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        sys.exit(2)
    except TeamNotFound:
        print(f"{PROG} {args.command}: team {args.team_id} does not exist", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _run(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "api":
        from .http.routing import Route
        from .http.server import serve_api
        from .http.supervisor import supervise
        from .process.loop import run_with_loop

        require(settings, "database_url", "secrets_key")
        if args.processes > 1:
            sys.exit(asyncio.run(supervise(settings, args.processes)))
        routes: list[Route] = []
        if settings.mock_merchant:  # dev/ is loaded only then
            from .dev.merchant import mock_merchant_routes

            routes = mock_merchant_routes(settings)
        run_with_loop(serve_api(settings, args.ready_fd, routes), settings.api_event_loop)
    elif args.command == "worker":
        from .worker.run import run_worker

        require(settings, "database_url", "redis_url", "secrets_key")
        asyncio.run(run_worker(settings))
    elif args.command == "migrate":
        require(settings, "database_url")
        applied = asyncio.run(_migrate(settings))
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    elif args.command == "notify":
        require(settings, "database_url", "secrets_key")
        print(json.dumps(asyncio.run(notify(settings, args.team_id))))
    elif args.command == "health":
        if args.process == "worker":
            require(settings, "redis_url")
        sys.exit(asyncio.run(_health(args.process, settings)))
    elif args.command == "dev":
        _dev(args, settings)


def _dev(args: argparse.Namespace, settings: Settings) -> None:
    if args.stop or args.reset:
        from .dev.data import reset_data, stop_servers

        (stop_servers if args.stop else reset_data)(settings.data_dir)
        return
    from .dev.run import run_dev

    asyncio.run(run_dev(settings))


async def _health(process: str, settings: Settings) -> int:
    if process == "worker":
        from .worker.health import check_workers

        return await check_workers(settings.redis_url or "", settings.queue_name)
    from .http.server import check_api

    return await check_api(settings)


async def _migrate(settings: Settings) -> list[str]:
    import asyncpg

    from .db import MigrationError, apply_migrations
    from .process.startup import reaching

    dsn = settings.database_url or ""
    with reaching("PostgreSQL", dsn):
        conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn)
    except MigrationError as exc:
        raise StartupError(str(exc)) from None
    finally:
        await conn.close()


async def notify(settings: Settings, team_id: str | None) -> dict[str, Any]:
    """The original's execSettlementNotifyJob([teamId]) as a one-shot command; TeamNotFound
    when `team_id` names no team (rather than counts of zero, as for a team with none due)."""
    from .bootstrap import services
    from .process.startup import reaching
    from .trade.queries import get_team

    async with contextlib.AsyncExitStack() as stack:
        with reaching("PostgreSQL", settings.database_url or ""):
            shared = await stack.enter_async_context(services(settings, pool_min=1))
        if team_id is not None:
            await get_team(shared.pool, team_id, pairs=None)
        return (await shared.dispatcher.drain(team_id)).report()
