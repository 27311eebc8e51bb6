"""`dev --stop` and `dev --reset` (`make stop`, `make reset-data`): the embedded servers an
earlier `dev` left running on GROUPBUY_DATA_DIR, and the data it stored there."""

import shutil
from pathlib import Path

from ..process.startup import StartupError
from .embedded import RunningServer, left_running

# What `dev`, and the tests and benchmarks beside it, write into the data dir; a data dir
# holding anything else is not deleted (GROUPBUY_DATA_DIR might name a folder of the user's).
DEV_ENTRIES = frozenset(
    {"postgres", "postgres.initdb", "postgres.log", "redis", "redis.log", "test", "faults", "bench"}
)


def stop_servers(data_dir: Path) -> None:
    """Stop the embedded servers running on `data_dir`, saying which, one line each."""
    servers = left_running(data_dir)
    for server in servers:
        server.stop()
        print(f"stopped {server} on {data_dir}")
    if not servers:
        print(f"no embedded server is running on {data_dir}")


def reset_data(data_dir: Path) -> None:
    """Delete `data_dir`; a StartupError, with nothing deleted, while a server runs on it (or
    on a folder in it: the tests' and benchmarks') or when it holds what `dev` did not write."""
    if not data_dir.is_dir():
        print(f"{data_dir}: nothing to delete")
        return
    running = _running_below(data_dir)
    if running:
        what = " and ".join(f"{server} on {where}" for where, server in running)
        raise StartupError(f"{what} still running: not deleted (`make stop` stops make run's)")
    foreign = sorted(entry.name for entry in data_dir.iterdir() if entry.name not in DEV_ENTRIES)
    if foreign:
        raise StartupError(
            f"{data_dir} holds {', '.join(foreign)}, not written by dev: not deleted"
        )
    shutil.rmtree(data_dir)
    print(f"deleted {data_dir}")


def _running_below(data_dir: Path) -> list[tuple[Path, RunningServer]]:
    """The servers running on `data_dir` or a folder below it, each with its data dir."""
    pid_files = (*data_dir.rglob("postmaster.pid"), *data_dir.rglob("redis.pid"))
    dirs = sorted({data_dir, *(pid_file.parent.parent for pid_file in pid_files)})
    return [(where, server) for where in dirs for server in left_running(where)]
