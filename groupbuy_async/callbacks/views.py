"""What operators see of the outbox and do to it: tasks listed, one task with its attempts,
and replay."""

import uuid
from enum import Enum

import asyncpg

_TASK_COLUMNS = """id, event_type, team_id, order_id, activity_id, event_id, notify_url,
    notify_count, notify_status, next_attempt_at, last_http_status, last_error, create_time,
    update_time"""


class By(Enum):
    """How an operator names one task: a team (its team.completed task, as the
    /notify_tasks/{teamId} paths do) or an event id (any event)."""

    TEAM = "team_id = $1 AND event_type = 'team.completed'"
    EVENT = "event_id = $1"


async def list_tasks(
    pool: asyncpg.Pool, status: int | None, team_id: str | None, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(
        f"SELECT {_TASK_COLUMNS} FROM notify_task"
        " WHERE ($1::smallint IS NULL OR notify_status = $1)"
        " AND ($2::text IS NULL OR team_id = $2) ORDER BY id DESC LIMIT $3",
        status,
        team_id,
        limit,
    )


async def get_task(
    pool: asyncpg.Pool, by: By, key: str | uuid.UUID
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """The task (with the body it sends) and every attempt, oldest first."""
    async with pool.acquire() as conn:
        task = await conn.fetchrow(
            f"SELECT {_TASK_COLUMNS}, parameter_json FROM notify_task WHERE {by.value}", key
        )
        if task is None:
            return None, []
        attempts = await conn.fetch(
            "SELECT attempt, started_at, duration_ms, http_status, response_body, error"
            " FROM notify_attempt WHERE task_id = $1 ORDER BY attempt",
            task["id"],
        )
    return task, attempts


async def replay(pool: asyncpg.Pool, by: By, key: str | uuid.UUID) -> asyncpg.Record | None:
    """Make a task in error (3) due again now, its retry schedule restarted. None if there
    is no such task in error."""
    return await pool.fetchrow(
        "UPDATE notify_task SET notify_status = 2, next_attempt_at = now(),"
        " schedule_offset = notify_count, last_error = NULL, locked_until = NULL,"
        f" claim_token = NULL, update_time = now() WHERE {by.value} AND notify_status = 3"
        f" RETURNING {_TASK_COLUMNS}",
        key,
    )
