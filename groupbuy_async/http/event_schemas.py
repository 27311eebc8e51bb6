"""The events merchants receive, as documented in OpenAPI's `webhooks`: each body is
{"type", "timestamp", "data"} (callbacks/events.py builds them)."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from .schemas import ACTIVITY_ID, TEAM_ID, USER_ID, Body

EVENT_ID = (
    "Event id (UUID), equal to the webhook-id header and the same on every retry: deduplicate on it"
)
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


class TeamCompletedEvent(Body):
    """POSTed to the team's notifyUrl when its last member pays."""

    type: Literal["team.completed"] = Field(description="The event type")
    timestamp: datetime = Field(description=TIMESTAMP)
    data: TeamCompletedData = Field(description="What completed")


class TeamFailedEvent(Body):
    """POSTed when a team's window ended before every member paid: refund the paid ones."""

    type: Literal["team.failed"] = Field(description="The event type")
    timestamp: datetime = Field(description=TIMESTAMP)
    data: TeamFailedData = Field(description="What failed and what to refund")


class OrderClosedEvent(Body):
    """POSTed when a locked, unpaid order is closed (payment timeout, cancel, failed team,
    or a payment that arrived too late): do not take its payment, or refund it."""

    type: Literal["order.closed"] = Field(description="The event type")
    timestamp: datetime = Field(description=TIMESTAMP)
    data: OrderEventData = Field(description="The closed order")


class OrderRefundedEvent(Body):
    """POSTed when a paid order is refunded: return the money."""

    type: Literal["order.refunded"] = Field(description="The event type")
    timestamp: datetime = Field(description=TIMESTAMP)
    data: OrderRefundedData = Field(description="The refunded order")


# The webhooks section of OpenAPI: event type -> its body.
WEBHOOKS: dict[str, type[Body]] = {
    "team.completed": TeamCompletedEvent,
    "team.failed": TeamFailedEvent,
    "order.closed": OrderClosedEvent,
    "order.refunded": OrderRefundedEvent,
}
