"""The events merchants receive, as documented in OpenAPI's `webhooks`: each body is
{"type", "timestamp", "data"} (callbacks/events.py builds them)."""

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import Field

from .schemas import ACTIVITY_ID, TEAM_ID, USER_ID, Body

EVENT_ID = (
    "Event id (UUID), equal to the webhook-id header and the same on every retry: deduplicate on it"
)
D = TypeVar("D", bound=Body)
TIMESTAMP = "When the event happened (the state change it reports), ISO-8601"


class TeamCompletedData(Body):
    team_id: str = Field(description=f"The completed team. {TEAM_ID}")
    out_trade_no_list: list[str] = Field(
        description="The merchant's outTradeNo of every paid member, in the order they locked"
    )
    activity_id: int = Field(description=ACTIVITY_ID)
    event_id: str = Field(description=EVENT_ID)


class TeamFailedData(Body):
    team_id: str = Field(description=f"The failed team. {TEAM_ID}")
    activity_id: int = Field(description=ACTIVITY_ID)
    out_trade_no_list: list[str] = Field(
        description="The paid orders of the team: refund each of them"
    )
    event_id: str = Field(description=EVENT_ID)


class OrderEventData(Body):
    order_id: str = Field(description="The order (our id)")
    out_trade_no: str = Field(description="The merchant's order number")
    user_id: str = Field(description=USER_ID)
    team_id: str = Field(description=TEAM_ID)
    activity_id: int = Field(description=ACTIVITY_ID)
    event_id: str = Field(description=EVENT_ID)


class OrderRefundedData(OrderEventData):
    refund_type: Literal["paid", "paid_team"] = Field(
        description="paid: refunded while its team was forming (or after it failed);"
        " paid_team: refunded from a complete team (team status 3). A cancelled lock (refund"
        " type unpaid) is an order.closed event: no money was taken"
    )


class EndpointDisabledData(Body):
    merchant_id: str = Field(description="The merchant")
    endpoint_id: str = Field(description="The endpoint the service disabled")
    url: str = Field(description="Its url")
    reason: str = Field(description="Why: how long and how often its attempts failed")
    failing_since: datetime = Field(description="Its first failed attempt since its last answer")
    failed_attempts: int = Field(description="Attempts failed since its last answer")
    event_id: str = Field(description=EVENT_ID)


class Event(Body, Generic[D]):
    """What every event's body carries besides its type."""

    timestamp: datetime = Field(description=TIMESTAMP)
    data: D = Field(description="What happened: the fields of the type's data")


class TeamCompletedEvent(Event[TeamCompletedData]):
    """POSTed to the merchant's endpoints when a team's last member pays."""

    type: Literal["team.completed"] = Field(description="The event type")


class TeamFailedEvent(Event[TeamFailedData]):
    """POSTed when a team's window ended before every member paid: refund the paid ones."""

    type: Literal["team.failed"] = Field(description="The event type")


class OrderClosedEvent(Event[OrderEventData]):
    """POSTed when a locked, unpaid order is closed (payment timeout, cancel, failed team,
    or a settlement refused as too late): its lock and take are released. No payment was
    recorded for it, so there is nothing to refund here: a payment the service refused was
    answered E0112/E0113, and that answer is the instruction."""

    type: Literal["order.closed"] = Field(description="The event type")


class OrderRefundedEvent(Event[OrderRefundedData]):
    """POSTed when a paid order is refunded: return the money."""

    type: Literal["order.refunded"] = Field(description="The event type")


class EndpointDisabledEvent(Event[EndpointDisabledData]):
    """POSTed to the merchant's other endpoints that take it when the service disabled one
    whose every attempt failed for GROUPBUY_ENDPOINT_DISABLE_AFTER_SECONDS: fix it, then
    enable it again (its held deliveries go out then)."""

    type: Literal["endpoint.disabled"] = Field(description="The event type")


# The webhooks section of OpenAPI: event type -> its body.
WEBHOOKS: dict[str, type[Body]] = {
    "team.completed": TeamCompletedEvent,
    "team.failed": TeamFailedEvent,
    "order.closed": OrderClosedEvent,
    "order.refunded": OrderRefundedEvent,
    "endpoint.disabled": EndpointDisabledEvent,
}
