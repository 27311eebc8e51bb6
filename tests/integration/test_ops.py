"""Migrations, logging formats and the request log line."""

import json
import logging

import asyncpg
import pytest

from groupbuy_async.db import migrate, migration_files
from groupbuy_async.logs import JsonFormatter, TextFormatter, request_id

from ..conftest import Api


async def test_migrate_is_versioned_and_idempotent(database_url: str, pool: asyncpg.Pool) -> None:
    assert await migrate(database_url) == []
    versions = [
        r["version"] for r in await pool.fetch("SELECT version FROM schema_migrations ORDER BY 1")
    ]
    assert versions == [v for v, _ in migration_files()]


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": msg, **extra})
    record.request_id = request_id.get()
    return record


def test_json_log_lines_carry_context() -> None:
    token = request_id.set("rid-1")
    try:
        line = JsonFormatter().format(_record("hello %s", args=("world",), team_id="123"))
    finally:
        request_id.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "hello world" and entry["team_id"] == "123"
    assert entry["request_id"] == "rid-1" and entry["level"] == "INFO"


def test_text_log_lines_are_readable() -> None:
    line = TextFormatter().format(_record("hello", team_id="123"))
    assert "hello" in line and "team_id=123" in line


async def test_each_request_logs_one_line_with_its_request_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="groupbuy_async.access"):
        async with api.client.get("/healthz", headers={"X-Request-Id": "trace-42"}) as resp:
            assert resp.headers["X-Request-Id"] == "trace-42"
    (line,) = [r for r in caplog.records if r.name == "groupbuy_async.access"]
    assert line.getMessage().startswith("GET /healthz 200 ")
    assert line.getMessage().endswith("ms")
    assert line.request_id == "trace-42"  # type: ignore[attr-defined]


def test_every_error_code_is_listed_in_the_readme() -> None:
    from pathlib import Path

    from groupbuy_async import errors

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    defined = {
        obj for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.ServiceError)
    } - {errors.Rejected}  # fmt: skip
    assert defined == set(errors.ALL_ERRORS) - {errors.Rejected}
    for error in errors.ALL_ERRORS:
        assert f"| `{error.code}` |" in readme or f"`{error.code}` /" in readme, error.code
