"""Bodies of the callback half: the event merchants receive, and the operator views."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from .catalog_schemas import PageLimit
from .schemas import ACTIVITY_ID, NOTIFY_STATUS, TEAM_ID, UPDATED, Body, TeamId
from .wire import NotifyStatusValue

# --- callbacks -----------------------------------------------------------------------


class NotifyTaskQuery(Body):
    status: NotifyStatusValue | None = Field(
        None, description=f"Only tasks in this status. {NOTIFY_STATUS}"
    )
    team_id: TeamId | None = Field(None, description=f"Only this team's task. {TEAM_ID}")
    limit: Annotated[int, Field(ge=1, le=1000)] = Field(100, description="Most tasks listed")


class NotifyRunIn(Body):
    team_id: TeamId | None = Field(
        None, description="Deliver only this team's task (if due); omit for every due task"
    )


EVENT_TYPES = "team.completed, team.failed, order.closed, order.refunded or endpoint.disabled"
EventTypeName = Literal[
    "team.completed", "team.failed", "order.closed", "order.refunded", "endpoint.disabled"
]


class TypeCounts(Body):
    wait_count: int = Field(description="Due tasks attempted in this run")
    success_count: int = Field(description="Delivered (now status 1)")
    retry_count: int = Field(description="Failed, retry scheduled (now status 2)")
    error_count: int = Field(description="Failed for good (now status 3)")


class NotifyCounts(TypeCounts):
    by_type: dict[str, TypeCounts] = Field(
        description=f"The same four counts for each event type ({EVENT_TYPES}): every type"
        " is listed, zeros included"
    )


class NotifyTaskOut(Body):
    """A delivery of an event to one endpoint; for an event as a whole (a team's task, an
    event's detail) the fields are those of its delivery that most needs attention (one in
    error first, then the oldest) and notifyStatus is the event's over all of them."""

    type: EventTypeName = Field(description=f"The event type: {EVENT_TYPES}")
    team_id: str | None = Field(description=f"{TEAM_ID}; null for endpoint.* events")
    order_id: str | None = Field(description="The order an order.* event is about; null else")
    activity_id: int | None = Field(description=f"{ACTIVITY_ID}; null for endpoint.* events")
    event_id: str = Field(
        description="The event id (UUID): the callback's webhook-id and eventId, the same on"
        " every attempt"
    )
    notify_url: str = Field(
        description="The endpoint's url when the delivery was made (sends go to its url now);"
        " '' for a broker endpoint (kind amqp)"
    )
    endpoint_id: str | None = Field(
        description="The endpoint this delivery goes to; null for deliveries written before"
        " endpoints (or, for an event, when no endpoint took it)"
    )
    merchant_id: str | None = Field(description="The endpoint's merchant; null with it")
    notify_count: int = Field(description="Attempts made so far, replays included")
    notify_status: NotifyStatusValue = Field(description=NOTIFY_STATUS)
    # Only pending tasks (0, 2) have a next attempt.
    next_attempt_at: datetime | None = Field(
        description="When the next attempt falls due; null once finished (status 1 or 3)"
    )
    last_http_status: int | None = Field(
        description="HTTP status of the last attempt; null before the first or when it got no"
        " answer (timeout, connection error, …)"
    )
    last_error: str | None = Field(description="Why the last attempt failed; null on success")
    create_time: datetime = Field(
        description="When the event was written (with the state change it reports)"
    )
    update_time: datetime = Field(description=UPDATED)


class Outcome(Body):
    """How one attempt ended (a broker endpoint's have no HTTP status)."""

    http_status: int | None = Field(description="The endpoint's HTTP status; null: no answer")
    response_body: str | None = Field(
        description="The endpoint's answer body, its first 2 KB (2048 bytes, decoded as UTF-8);"
        " null when no answer came"
    )
    duration_ms: int = Field(description="How long it took, in milliseconds")
    error: str | None = Field(
        description="Why it failed (timeout, refused, unroutable, nacked, …); null if answered"
        " (a broker endpoint: if confirmed)"
    )


class NotifyAttemptOut(Outcome):
    attempt: int = Field(description="Attempt number, 1-based, counted over the task's life")
    started_at: datetime = Field(description="When the attempt started")


class EventDeliveryOut(NotifyTaskOut):
    attempts: list[NotifyAttemptOut] = Field(description="Every attempt, oldest first")


class NotifyTaskDetail(NotifyTaskOut):
    attempts: list[NotifyAttemptOut] = Field(
        description="Every attempt of the delivery these fields describe, oldest first"
    )
    deliveries: list[EventDeliveryOut] = Field(
        description="The event's deliveries, one per endpoint it went to, each with its"
        " attempts; empty when no endpoint took it"
    )


# --- events ----------------------------------------------------------------------------

DATA_SENT = (
    "The data the callback carried (the body's `data`; see webhooks for each type's fields)."
    " Events written before callbacks were typed: their flat body"
)
FEED_ORDER = (
    "in the order of the transactions that wrote them (then of writing). An event is listed"
    " once every transaction of the database that began before its own has ended, so none can"
    " ever appear before one already listed: paging on with `after` misses nothing, though an"
    " event may show up here a moment after its callback is sent"
)


class EventDetail(NotifyTaskDetail):
    data: dict[str, Any] = Field(description=DATA_SENT)


class EventPageQuery(Body):
    after: uuid.UUID | None = Field(
        None,
        description="The previous page's nextCursor, or the eventId of the last event you"
        " processed from this list; absent for the first page. One pruned past the retention"
        " answers 410 E0204: start again without it",
    )
    type: EventTypeName | None = Field(None, description="Only events of this type")
    team_id: TeamId | None = Field(None, description=f"Only this team's events. {TEAM_ID}")
    limit: PageLimit = Field(100, description="Most events on one page (1-500)")


class EventOut(Body):
    event_id: str = Field(
        description="The event id (UUID): the callback's webhook-id and eventId; deduplicate on it"
    )
    type: EventTypeName = Field(description="The event type")
    team_id: str | None = Field(description=f"{TEAM_ID}; null for endpoint.* events")
    order_id: str | None = Field(description="The order an order.* event is about; null else")
    notify_status: NotifyStatusValue = Field(description=NOTIFY_STATUS)
    create_time: datetime = Field(
        description="When the event was written (with the state change it reports)"
    )
    data: dict[str, Any] = Field(description=DATA_SENT)


class EventPage(Body):
    items: list[EventOut] = Field(description=f"Events {FEED_ORDER}")
    next_cursor: str | None = Field(
        description="Pass as `after` for the next page; null on the last page (poll again"
        " later with `after` = the last item's eventId)"
    )
    retained_since: datetime | None = Field(
        description="Events are kept GROUPBUY_RETENTION_DAYS, then pruned once none of their"
        " deliveries is open or held: every event written since this time is in the feed;"
        " older ones may have been pruned (an `after` naming one then answers 410 E0204)."
        " Null: none ever was. Orders (the order pull) are never pruned"
    )


class ReceivedCallback(Body):
    webhook_id: str = Field(description="The webhook-id header (the event id)")
    received_at: datetime = Field(description="When the mock merchant first received it")
    signature_verified: bool = Field(
        description="True when webhook-signature verified with the secret of an endpoint at"
        " the mock merchant's url (the demo's `mock`)"
    )
    payload: Any = Field(description="The body as received: JSON, or the text if not JSON")
