"""Bodies of deliveries as merchants and operators see them: one event to one endpoint."""

from datetime import datetime

from pydantic import Field

from .callback_schemas import EVENT_TYPES, EventTypeName, NotifyAttemptOut
from .catalog_schemas import PageLimit
from .merchant_schemas import ENDPOINT_ID, EndpointId
from .schemas import NOTIFY_STATUS, Body
from .wire import NotifyStatusValue

DELIVERY_ID = "Delivery id: one event to one endpoint, with its own attempts and schedule"


class DeliveryQuery(Body):
    status: NotifyStatusValue | None = Field(None, description=f"Only this status. {NOTIFY_STATUS}")
    type: EventTypeName | None = Field(None, description=f"Only this event type: {EVENT_TYPES}")
    endpoint_id: EndpointId | None = Field(None, description=f"Only this endpoint's. {ENDPOINT_ID}")
    after: int | None = Field(
        None, ge=1, le=2**63 - 1, description="The previous page's nextCursor; absent first"
    )
    limit: PageLimit = Field(100, description="Most deliveries on one page (1-500)")


class DeliveryOut(Body):
    delivery_id: int = Field(description=DELIVERY_ID)
    event_id: str = Field(description="The event (UUID): the webhook-id on every endpoint")
    endpoint_id: str = Field(description=ENDPOINT_ID)
    type: EventTypeName = Field(description=f"The event type: {EVENT_TYPES}")
    status: NotifyStatusValue = Field(description=NOTIFY_STATUS)
    attempt_count: int = Field(description="Attempts made so far (resends included)")
    next_attempt_time: datetime | None = Field(
        description="When the next attempt falls due; null unless waiting (0, 2)"
    )
    last_http_status: int | None = Field(
        description="HTTP status of the last attempt; null before one or when none came"
    )
    last_error: str | None = Field(description="Why the last attempt failed; null on success")
    create_time: datetime = Field(description="When the event was written")
    update_time: datetime = Field(description="When the delivery last changed")


class DeliveryPage(Body):
    items: list[DeliveryOut] = Field(description="Deliveries, newest first")
    next_cursor: int | None = Field(description="after= for the next page; null on the last")


class DeliveryDetail(DeliveryOut):
    attempts: list[NotifyAttemptOut] = Field(description="Every attempt, oldest first")
