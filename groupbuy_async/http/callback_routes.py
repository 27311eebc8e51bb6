"""Operator endpoints of the callback half: run, list, inspect and replay notify tasks."""

from typing import Any

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..callbacks import outbox
from .callback_schemas import (
    NotifyAttemptOut,
    NotifyCounts,
    NotifyRunIn,
    NotifyTaskDetail,
    NotifyTaskOut,
    NotifyTaskQuery,
)
from .routing import Route, path_param


def _task_out(row: Any) -> NotifyTaskOut:
    fields = dict(row)
    fields.pop("id", None)
    fields["type"] = fields.pop("event_type")
    if fields["notify_status"] not in (0, 2):
        fields["next_attempt_at"] = None
    return NotifyTaskOut(**{**fields, "event_id": str(row["event_id"])})


async def run_notify(request: web.Request, body: NotifyRunIn) -> NotifyCounts:
    counts = await request.app[SERVICES].dispatcher.drain(body.team_id)
    return NotifyCounts.model_validate(counts.report())


async def list_notify_tasks(request: web.Request, query: NotifyTaskQuery) -> list[NotifyTaskOut]:
    rows = await outbox.list_tasks(
        request.app[SERVICES].pool, query.status, query.team_id, query.limit
    )
    return [_task_out(r) for r in rows]


async def get_notify_task(request: web.Request, _: None) -> NotifyTaskDetail:
    task, attempts = await outbox.get_task(
        request.app[SERVICES].pool, path_param(request, "teamId")
    )
    if task is None:
        raise errors.NotFound("no notify task for this team")
    return NotifyTaskDetail(
        **_task_out(task).model_dump(),
        attempts=[NotifyAttemptOut(**dict(a)) for a in attempts],
    )


async def replay_notify_task(request: web.Request, _: None) -> NotifyTaskOut:
    pool = request.app[SERVICES].pool
    team_id = path_param(request, "teamId")
    row = await outbox.replay(pool, team_id)
    if row is None:
        task, _attempts = await outbox.get_task(pool, team_id)
        if task is None:
            raise errors.NotFound("no notify task for this team")
        raise errors.NotifyTaskNotReplayable(
            f"notify task is in status {task['notify_status']}; only status 3 (error) replays"
        )
    return _task_out(row)


CALLBACK_ROUTES: list[Route] = [
    Route(
        "POST",
        "/api/v1/admin/notify/run",
        run_notify,
        "Deliver due callbacks now (optionally one team's)",
        "callbacks",
        NotifyRunIn,
        NotifyCounts,
        admin=True,
    ),
    Route(
        "GET",
        "/api/v1/admin/notify_tasks",
        list_notify_tasks,
        "Notify tasks, newest first",
        "callbacks",
        None,
        list[NotifyTaskOut],
        admin=True,
        query=NotifyTaskQuery,
    ),
    Route(
        "GET",
        "/api/v1/admin/notify_tasks/{teamId}",
        get_notify_task,
        "A team's notify task with every attempt",
        "callbacks",
        None,
        NotifyTaskDetail,
        admin=True,
    ),
    Route(
        "POST",
        "/api/v1/admin/notify_tasks/{teamId}/replay",
        replay_notify_task,
        "Make a task in error (3) due again now",
        "callbacks",
        None,
        NotifyTaskOut,
        admin=True,
    ),
]
