"""The release as an operator gets it: the wheel built from this tree, installed with its
dependencies into a fresh virtualenv, and its `groupbuy-async migrate` run from a folder that
is not the repository, on a new empty database.

Takes about 15-20 s with pip's cache warm (most of it `pip install` of the dependencies).
"""

import asyncio
import os
import re
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from yarl import URL

from ..conftest import ROOT

MIGRATIONS = sorted((ROOT / "sql").glob("*.sql"))
PACKAGED = "groupbuy_async/migrations/"
STEP_SECONDS = 300  # one build or install step; pip may download when its cache is cold
_CREATE_TABLE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.IGNORECASE)


def _clean_env(**extra: str) -> dict[str, str]:
    """No GROUPBUY_* settings and nothing that would point Python at this checkout."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_") and k not in dropped
    }
    return {**env, **extra}


async def _check(*cmd: str | Path, cwd: Path, env: dict[str, str]) -> str:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *map(str, cmd), cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), STEP_SECONDS)
    text = out.decode()
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{text[-3000:]}"
    print(f"{time.monotonic() - started:5.1f}s  {' '.join(map(str, cmd[:3]))}")
    return text


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


@pytest.fixture
async def empty_database(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    """A new database with nothing in it, on the tests' PostgreSQL server; dropped after."""
    admin = server_urls[0]
    name = f"groupbuy_release_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield str(URL(admin).with_path(f"/{name}"))
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


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
    wheel: Path, empty_database: str, tmp_path: Path
) -> None:
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    await _check(sys.executable, "-m", "venv", venv, cwd=elsewhere, env=env)
    await _check(venv / "bin" / "pip", "install", "-q", wheel, cwd=elsewhere, env=env)

    # The installed code reads the migrations packaged with it, not this checkout's sql/.
    where = await _check(
        venv / "bin" / "python", "-c", "from groupbuy_async import db; print(db.SQL_DIR)",
        cwd=elsewhere, env=env,
    )  # fmt: skip
    sql_dir = Path(where.strip().splitlines()[-1])
    assert sql_dir.name == "migrations" and sql_dir.is_relative_to(venv), sql_dir

    run_env = _clean_env(GROUPBUY_DATABASE_URL=empty_database)
    cli = venv / "bin" / "groupbuy-async"
    out = await _check(cli, "migrate", cwd=elsewhere, env=run_env)
    names = [p.name for p in MIGRATIONS]
    assert f"applied {len(names)} migration(s): {', '.join(names)}" in out, out

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

    again = await _check(cli, "migrate", cwd=elsewhere, env=run_env)
    assert "applied 0 migration(s): none pending" in again
