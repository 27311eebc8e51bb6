"""Callback endpoints: run/list/inspect/replay notify tasks, metrics, and the mock merchant."""

import json
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import errors, outbox
from .keys import DISPATCHER, METRICS, MOCK_MERCHANT, POOL
from .metrics import metrics_response
from .models import (
    NotifyAttemptOut,
    NotifyCounts,
    NotifyRunIn,
    NotifyTaskDetail,
    NotifyTaskOut,
    NotifyTaskQuery,
    ReceivedCallback,
)
from .notify_rules import verify
from .web import Route, path_param

SIGNATURE_TOLERANCE_SECONDS = 300


def _task_out(row: Any) -> NotifyTaskOut:
    fields = dict(row)
    fields.pop("id", None)
    if fields["notify_status"] not in (0, 2):
        fields["next_attempt_at"] = None
    return NotifyTaskOut(**{**fields, "event_id": str(row["event_id"])})


async def run_notify(request: web.Request, body: NotifyRunIn) -> NotifyCounts:
    counts = await request.app[DISPATCHER].drain(body.team_id)
    return NotifyCounts(**counts.__dict__)


async def list_notify_tasks(request: web.Request, query: NotifyTaskQuery) -> list[NotifyTaskOut]:
    rows = await outbox.list_tasks(request.app[POOL], query.status, query.team_id, query.limit)
    return [_task_out(r) for r in rows]


async def get_notify_task(request: web.Request, _: None) -> NotifyTaskDetail:
    task, attempts = await outbox.get_task(request.app[POOL], path_param(request, "teamId"))
    if task is None:
        raise errors.NotFound("no notify task for this team")
    return NotifyTaskDetail(
        **_task_out(task).model_dump(),
        attempts=[NotifyAttemptOut(**dict(a)) for a in attempts],
    )


async def replay_notify_task(request: web.Request, _: None) -> NotifyTaskOut:
    pool = request.app[POOL]
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


async def metrics(request: web.Request, _: None) -> web.Response:
    return await metrics_response(request.app[METRICS], request.app[POOL])


class MockMerchant:
    """The original's TestApiClientController: answers `success`, remembers what came."""

    def __init__(self, signing_key: bytes | None, keep: int = 100) -> None:
        self.signing_key = signing_key
        self.keep = keep
        self.received: OrderedDict[str, ReceivedCallback] = OrderedDict()

    def check(self, headers: Any, body: str) -> bool:
        """True when signed correctly; raises Unauthorized when a secret is set and it is not."""
        if self.signing_key is None:
            return False
        try:
            msg_id = headers["webhook-id"]
            timestamp = int(headers["webhook-timestamp"])
            signature = headers["webhook-signature"]
        except (KeyError, ValueError):
            raise errors.Unauthorized("missing webhook signature headers") from None
        if abs(time.time() - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
            raise errors.Unauthorized("webhook timestamp outside tolerance")
        if not verify(self.signing_key, msg_id, timestamp, body, signature):
            raise errors.Unauthorized("invalid webhook signature")
        return True

    def remember(self, webhook_id: str, verified: bool, body: str) -> None:
        if webhook_id in self.received:
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = body
        self.received[webhook_id] = ReceivedCallback(
            webhook_id=webhook_id, received_at=datetime.now(UTC),
            signature_verified=verified, payload=payload,
        )  # fmt: skip
        while len(self.received) > self.keep:
            self.received.popitem(last=False)


async def mock_merchant_receive(request: web.Request, _: None) -> web.Response:
    merchant = request.app[MOCK_MERCHANT]
    body = await request.text()
    try:
        verified = merchant.check(request.headers, body)
    except errors.Unauthorized as exc:
        return web.Response(status=401, text=exc.info)
    merchant.remember(
        request.headers.get("webhook-id", f"unsigned-{time.time_ns()}"), verified, body
    )
    return web.Response(text="success")


async def mock_merchant_list(request: web.Request, _: None) -> list[ReceivedCallback]:
    return list(reversed(request.app[MOCK_MERCHANT].received.values()))


NOTIFY_ROUTES: list[Route] = [
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
    Route("GET", "/metrics", metrics, "Prometheus metrics", "ops", raw="text/plain"),
]

MOCK_MERCHANT_ROUTES: list[Route] = [
    Route(
        "POST",
        "/api/v1/test/group_buy_notify",
        mock_merchant_receive,
        "Mock merchant: receives a callback, answers 'success'",
        "test",
        raw="text/plain",
    ),
    Route(
        "GET",
        "/api/v1/test/group_buy_notify",
        mock_merchant_list,
        "Mock merchant: callbacks received (newest first)",
        "test",
        None,
        list[ReceivedCallback],
    ),
]
