"""Operator endpoints of the callback half: run, list, inspect and replay notify tasks (by
team) and events (by id), and the event feed."""

import uuid
from typing import Any

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..callbacks import events, feed, retention, views
from ..callbacks.views import By
from ..db import columns
from .callback_schemas import (
    EventDeliveryOut,
    EventDetail,
    EventOut,
    EventPage,
    EventPageQuery,
    NotifyAttemptOut,
    NotifyCounts,
    NotifyRunIn,
    NotifyTaskDetail,
    NotifyTaskOut,
    NotifyTaskQuery,
)
from .routing import Route, path_param

_TASK_FIELDS = frozenset(NotifyTaskOut.model_fields) - {"type", "event_id"}


def _task_out(row: Any) -> NotifyTaskOut:
    fields = {name: row[name] for name in _TASK_FIELDS}
    if fields["notify_status"] not in (0, 2):
        fields["next_attempt_at"] = None
    return NotifyTaskOut(**fields, type=row["event_type"], event_id=str(row["event_id"]))


def _detail(event: Any, deliveries: Any, attempts: Any) -> dict[str, Any]:
    """The fields of a NotifyTaskDetail: the event, each delivery with its attempts."""
    shown = event["delivery_id"]
    return {
        **_task_out(event).model_dump(),
        "attempts": [NotifyAttemptOut(**_attempt(a)) for a in attempts.get(shown, [])],
        "deliveries": [
            EventDeliveryOut(
                **_task_out(d).model_dump(),
                attempts=[NotifyAttemptOut(**_attempt(a)) for a in attempts[d["id"]]],
            )
            for d in deliveries
        ],
    }


def _attempt(row: Any) -> dict[str, Any]:
    return {name: row[name] for name in NotifyAttemptOut.model_fields}


async def run_notify(request: web.Request, body: NotifyRunIn) -> NotifyCounts:
    counts = await request.app[SERVICES].dispatcher.drain(body.team_id)
    return NotifyCounts.model_validate(counts.report())


async def list_notify_tasks(request: web.Request, query: NotifyTaskQuery) -> list[NotifyTaskOut]:
    rows = await views.list_tasks(
        request.app[SERVICES].pool, query.status, query.team_id, query.limit
    )
    return [_task_out(r) for r in rows]


async def get_notify_task(request: web.Request, _: None) -> NotifyTaskDetail:
    event, deliveries, attempts = await views.get_event(
        request.app[SERVICES].pool, By.TEAM, path_param(request, "teamId")
    )
    if event is None:
        raise errors.NotFound("no notify task for this team")
    return NotifyTaskDetail(**_detail(event, deliveries, attempts))


async def _replay(
    request: web.Request, by: By, key: str | uuid.UUID, missing: str
) -> NotifyTaskOut:
    """The replayed task, or why not: unknown (404) or not in error (E0201)."""
    pool = request.app[SERVICES].pool
    row = await views.replay(pool, by, key)
    if row is not None:
        return _task_out(row)
    event, _deliveries, _attempts = await views.get_event(pool, by, key)
    if event is None:
        raise errors.NotFound(missing)
    raise errors.NotifyTaskNotReplayable(
        f"notify task is in status {event['notify_status']}: no delivery of it is in status 3"
        " (error)"
    )


async def replay_notify_task(request: web.Request, _: None) -> NotifyTaskOut:
    team_id = path_param(request, "teamId")
    return await _replay(request, By.TEAM, team_id, "no notify task for this team")


# --- events ----------------------------------------------------------------------------


async def get_event(request: web.Request, _: None) -> EventDetail:
    event, deliveries, attempts = await views.get_event(
        request.app[SERVICES].pool, By.EVENT, path_param(request, "eventId")
    )
    if event is None:
        raise errors.NotFound("no event with this id")
    _kind, data = events.parse_body(event["parameter_json"])
    return EventDetail(**_detail(event, deliveries, attempts), data=data)


async def replay_event(request: web.Request, _: None) -> NotifyTaskOut:
    event_id = path_param(request, "eventId")
    return await _replay(request, By.EVENT, event_id, "no event with this id")


def _event_out(row: Any) -> EventOut:
    _kind, data = events.parse_body(row["parameter_json"])
    copied = columns(row, "team_id order_id notify_status create_time")
    return EventOut(**copied, event_id=str(row["event_id"]), type=row["event_type"], data=data)


_AFTER_UNKNOWN = "after: no event with this id"


async def list_events(request: web.Request, query: EventPageQuery) -> EventPage:
    pool = request.app[SERVICES].pool
    after = feed.FEED_START
    if query.after is not None:
        found = await feed.feed_position(pool, query.after)
        if found is None:
            # Once events have been pruned, a cursor naming none is most likely one of them
            # (a merchant who paged slower than the retention): 410, start again. Before,
            # it is a mistake: 400.
            if await retention.pruned_before(pool) is not None:
                raise errors.EventNotRetained()
            raise errors.BadInput(_AFTER_UNKNOWN)
        after = found
    rows = await feed.list_events(
        pool, after, event_type=query.type, team_id=query.team_id, limit=query.limit + 1
    )
    page = rows[: query.limit]
    cursor = str(page[-1]["event_id"]) if len(rows) > query.limit else None
    return EventPage(
        items=[_event_out(r) for r in page],
        next_cursor=cursor,
        retained_since=await retention.pruned_before(pool),
    )


_REPLAY_REFUSALS = (errors.NotFound, errors.NotifyTaskNotReplayable)

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
        raises=(errors.NotFound,),
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
        raises=_REPLAY_REFUSALS,
    ),
    Route(
        "GET",
        "/api/v1/admin/events",
        list_events,
        "Events in feed order, one cursor page (a team's, of a type): what callbacks carried",
        "callbacks",
        None,
        EventPage,
        admin=True,
        query=EventPageQuery,
        raises=(errors.BadInput(_AFTER_UNKNOWN), errors.EventNotRetained),
    ),
    Route(
        "GET",
        "/api/v1/admin/events/{eventId}",
        get_event,
        "An event with every delivery attempt and the data sent",
        "callbacks",
        None,
        EventDetail,
        admin=True,
        raises=(errors.NotFound,),
    ),
    Route(
        "POST",
        "/api/v1/admin/events/{eventId}/replay",
        replay_event,
        "Make an event in error (3) due again now",
        "callbacks",
        None,
        NotifyTaskOut,
        admin=True,
        raises=_REPLAY_REFUSALS,
    ),
]
