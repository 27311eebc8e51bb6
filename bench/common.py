"""Plumbing both benchmarks share: servers, a fresh database per run, child processes,
latency samples and result tables."""

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic.alias_generators import to_snake
from yarl import URL

from groupbuy_async.db import create_pool
from groupbuy_async.dev.databases import temporary_database
from groupbuy_async.dev.embedded import servers_or_embedded
from groupbuy_async.merchants import accounts, endpoints, keys
from groupbuy_async.merchants.secret_box import SecretBox

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class BenchFailure(Exception):
    """A request or a check gave a wrong result: the numbers cannot be trusted."""


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the tests' signing secret
SECRETS_KEY = "rA-FQVO3wigthyj2RDALcqgn3CmUErYPfktyHBrXbl0="  # seals it in the database


def servers() -> AbstractContextManager[tuple[str, str]]:
    """(PostgreSQL admin DSN, Redis URL): GROUPBUY_BENCH_DATABASE_URL /
    GROUPBUY_BENCH_REDIS_URL, then the GROUPBUY_TEST_* ones, else embedded servers,
    which are stopped on exit."""
    env = os.environ.get
    return servers_or_embedded(
        env("GROUPBUY_BENCH_DATABASE_URL") or env("GROUPBUY_TEST_DATABASE_URL"),
        env("GROUPBUY_BENCH_REDIS_URL") or env("GROUPBUY_TEST_REDIS_URL"),
        ROOT / ".data" / "bench",
    )


def fresh_database(admin_dsn: str) -> AbstractAsyncContextManager[str]:
    """A new, migrated database for one benchmark run; dropped afterwards."""
    return temporary_database(admin_dsn, "groupbuy_bench")


async def shop_headers(
    db_url: str, source: str, channel: str, endpoint_url: str | None = None
) -> dict[str, str]:
    """A bench merchant holding source+channel (with an endpoint at `endpoint_url`, signed
    with SECRET, when given), and the Authorization header of a new key of it: the shop
    API's requests carry it."""
    pool = await create_pool(db_url, 1, 1)
    try:
        await accounts.put_merchant(pool, "bench", "bench merchant", [(source, channel)])
        if endpoint_url is not None:
            spec = endpoints.EndpointSpec(endpoint_url, secret=SECRET)
            box = SecretBox(SECRETS_KEY)
            await endpoints.put_endpoint(pool, box, "bench", "receiver", spec, False)
        created = await keys.create_key(pool, "bench")
    finally:
        await pool.close()
    if created is None:
        raise BenchFailure("the bench merchant vanished")
    return {"Authorization": f"Bearer {created.key}"}


def database_name(url: str) -> str:
    """As PostgreSQL's process titles show it, to tell this run's backends from others."""
    return URL(url).path.lstrip("/")


async def stop_process(proc: asyncio.subprocess.Process, grace_seconds: float = 20) -> None:
    """SIGTERM (the API and the receiver shut down cleanly on it), SIGKILL if it hangs."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def command(kind: Callable[..., T], body: Mapping[str, Any]) -> T:
    """A request body (camelCase, as the API takes it) as the domain's command: what the
    direct paths hand the trade functions."""
    return kind(**{to_snake(key): value for key, value in body.items()})


async def timed(latencies_ms: list[float], call: Awaitable[T]) -> T:
    """Await `call`, appending how long it took."""
    began = time.perf_counter()
    result = await call
    latencies_ms.append((time.perf_counter() - began) * 1000)
    return result


def percentile(samples: list[float], pct: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def table(
    columns: Sequence[tuple[str, int]], rows: Iterable[Sequence[str] | None], rule: bool = True
) -> list[str]:
    """Lines of a fixed-width table: each column is (title, width), right-aligned, or
    left-aligned when the width is negative; a row of None is a blank line. With `rule`,
    dashes under the titles and after the last row."""

    def line(cells: Sequence[str]) -> str:
        return " ".join(
            f"{cell:<{-width}}" if width < 0 else f"{cell:>{width}}"
            for cell, (_, width) in zip(cells, columns, strict=True)
        ).rstrip()

    head = line([title for title, _ in columns])
    body = ["" if row is None else line(row) for row in rows]
    if not rule:
        return [head, *body]
    return [head, "-" * len(head), *body, "-" * len(head)]


class Options(argparse.ArgumentParser):
    """A benchmark's command line, `python -m {module}`, its doc the description; with `pool`,
    the bounds of the database pools (per side: the API's or the worker's, and the
    benchmark's)."""

    def __init__(self, module: str, doc: str | None, pool: bool = False) -> None:
        super().__init__(
            prog=f"python -m {module}",
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if pool:
            self.add_argument(
                "--pool-min", type=positive, default=2, help="DB pool min per side (2)"
            )
            self.add_argument(
                "--pool-max", type=positive, default=20, help="DB pool max per side (20)"
            )

    def parse(self, argv: list[str] | None) -> argparse.Namespace:
        args = self.parse_args(argv)
        if "pool_min" in args and args.pool_min > args.pool_max:
            self.error("need --pool-min <= --pool-max")
        return args


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def log_warnings() -> None:
    """Warnings and errors only, each with its logger's name."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def run_bench(main: Coroutine[Any, Any, int]) -> NoReturn:
    """Exit with the benchmark's status; a BenchFailure (numbers that cannot be trusted)
    is one line on stderr and status 1, not a traceback."""
    log_warnings()
    try:
        status = asyncio.run(main)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        status = 1
    sys.exit(status)
