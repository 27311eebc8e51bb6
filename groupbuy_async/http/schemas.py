"""Request and response bodies. JSON is camelCase; validation is strict (no type coercion)."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from ..trade.rules import CLOCK_SKEW, RefundType
from .wire import (
    TIME_RULE,
    ApiTime,
    HttpUrlText,
    OrderStatusValue,
    TeamStatusValue,
    WholeNumber,
)

Code = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Text = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^\x00]*$")]
# Numeric strings are tolerated on input, but the documented form is a JSON number.
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=12, decimal_places=2),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 9999999999.99, "multipleOf": 0.01}),
]
# Amounts the service computes: written as JSON numbers with two decimals.
Amount = Annotated[Decimal, WithJsonSchema({"type": "number", "multipleOf": 0.01})]
Count = Annotated[int, Field(ge=1, le=100_000), WholeNumber]
TeamId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[0-9]+$")]
ActivityId = Annotated[int, Field(ge=1, le=2**62), WholeNumber]


# Descriptions shared by several models.
SOURCE = "Sales source, e.g. s01 (with channel, where the goods are sold)"
CHANNEL = "Sales channel, e.g. c01"
GOODS_ID = "Goods (SKU) id"
USER_ID = "The shopper's user id"
TEAM_ID = "Team id (8 digits)"
ACTIVITY_ID = "Group-buy activity id"
CREATED = "When first stored"
UPDATED = "When last changed"
TEAM_STATUS = (
    "Team status: 0 forming, 1 complete (every member paid), 2 failed (its window ended"
    " before every member paid), 3 complete with refunds (a member of the complete team"
    " refunded; the counts stay)"
)
ORDER_STATUS = (
    "Member order status: 0 locked (unpaid), 1 paid, 2 closed (never paid: the unpaid lock"
    " released by its payment deadline, a cancel, or its team's failure), 3 refunded (paid,"
    " then refunded)"
)
NOTIFY_STATUS = (
    "Callback status: 0 initial (not yet attempted), 1 success, 2 retry (an attempt failed,"
    " another is scheduled), 3 error (given up; an operator may replay it), 4 held (its"
    " endpoint is disabled: kept, not attempted, due again once it is enabled)"
)
PRICE = "in currency units, a JSON number with two decimals"
_SKEW = int(CLOCK_SKEW.total_seconds() // 60)

# Every path parameter of the API, validated (and documented) by these types.
PATH_PARAMS: dict[str, Any] = {
    "discountId": Annotated[Code, Field(description="Discount id, chosen by the operator")],
    "goodsId": Annotated[Code, Field(description=GOODS_ID)],
    "activityId": Annotated[ActivityId, Field(description=ACTIVITY_ID)],
    "teamId": Annotated[TeamId, Field(description=TEAM_ID)],
    "eventId": Annotated[
        uuid.UUID, Field(description="Event id (UUID): the callback's webhook-id and eventId")
    ],
    "outTradeNo": Annotated[Code, Field(description="The merchant's order number given at lock")],
    "merchantId": Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$"),
        Field(description="Merchant id: 1-32 of A-Z a-z 0-9 _ -"),
    ],
    "keyId": Annotated[
        str,
        StringConstraints(pattern=r"^key_[0-9a-f]{16}$"),
        Field(description="API key id (key_ + 16 hex digits)"),
    ],
    "deliveryId": Annotated[
        int, Field(ge=1, le=2**63 - 1, description="Delivery id: one event to one endpoint")
    ],
    "endpointId": Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$"),
        Field(description="Endpoint id: 1-32 of A-Z a-z 0-9 _ -"),
    ],
}


class Body(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, strict=True, frozen=True
    )


# --- shop front ------------------------------------------------------------------------


class ShopperIn(Body):
    user_id: Code = Field(description=USER_ID)
    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)


class PurchaseIn(ShopperIn):
    out_trade_no: Code = Field(description="The merchant's order number given at lock")


class MarketConfigQuery(ShopperIn):
    goods_id: Code = Field(description=GOODS_ID)


class GoodsTrial(Body):
    goods_id: str = Field(description=GOODS_ID)
    original_price: Amount = Field(description=f"Price before discount, {PRICE}")
    deduction_price: Amount = Field(description=f"originalPrice - payPrice, {PRICE}")
    pay_price: Amount = Field(description=f"What the shopper pays in a team, {PRICE}")


class TeamCounts(Body):
    team_id: str = Field(description=TEAM_ID)
    activity_id: int = Field(description=ACTIVITY_ID)
    target_count: int = Field(description="Team size: members needed to complete")
    complete_count: int = Field(description="Members who have paid")
    lock_count: int = Field(description="Members who have locked an order (paid or not)")
    valid_start_time: datetime = Field(description="When the team opened")
    valid_end_time: datetime = Field(
        description="When the team's window ends: opening + the activity's validTime minutes"
    )


class TeamBrief(TeamCounts):
    valid_time_countdown: str = Field(description="Time left in the window, HH:mm:ss")


class TeamStatistic(Body):
    all_team_count: int = Field(description="Teams of this activity, in any status")
    all_team_complete_count: int = Field(
        description="Teams that completed (status 1, or 3: complete with refunds)"
    )
    all_team_user_count: int = Field(description="Locked orders over all teams (sum of lockCount)")


class MarketConfig(Body):
    activity_id: int = Field(description=ACTIVITY_ID)
    goods: GoodsTrial = Field(description="The goods' price trial")
    team_list: list[TeamBrief] = Field(
        description="Forming teams: the user's own (at most one) first, then up to two others"
        " the user can join"
    )
    team_statistic: TeamStatistic = Field(description="Counts over the activity's teams")


class LockIn(ShopperIn):
    team_id: TeamId | None = Field(None, description="Team to join; omit to open a new team")
    activity_id: ActivityId = Field(description=ACTIVITY_ID)
    goods_id: Code = Field(description=GOODS_ID)
    out_trade_no: Code = Field(
        description="The merchant's order number, unique per source and channel: locking it"
        " again returns the same order"
    )
    notify_url: HttpUrlText | None = Field(
        None,
        description="Optional (the original's field): the url of one of the merchant's enabled"
        " endpoints (400 otherwise); the team's events then go to the endpoint(s) at that url"
        " only. Omitted, they go to every endpoint of the merchant that takes them. Kept from"
        " the order that opens the team; ignored when joining (but still checked)",
    )


class LockOut(Body):
    order_id: str = Field(description="The member order's id (12 digits)")
    team_id: str = Field(description=f"{TEAM_ID}: the team opened or joined")
    original_price: Amount = Field(description=f"Price before discount, {PRICE}")
    deduction_price: Amount = Field(description=f"originalPrice - payPrice, {PRICE}")
    pay_price: Amount = Field(description=f"What the shopper pays, {PRICE}")
    trade_order_status: OrderStatusValue = Field(
        description=f"{ORDER_STATUS}. A repeated lock answers the order as it is now: a closed"
        " or refunded one is never reopened, lock again with a new outTradeNo"
    )


class SettleIn(PurchaseIn):
    out_trade_time: ApiTime = Field(
        description="When the shopper paid, by the merchant's clock: not before the order's"
        f" lock (createTime) nor after the team's validEndTime, each with {_SKEW} minutes'"
        f" allowance for clock skew; {TIME_RULE}"
    )


class MemberOut(Body):
    user_id: str = Field(description=USER_ID)
    team_id: str = Field(description=TEAM_ID)
    out_trade_no: str = Field(description="The merchant's order number")


class SettleOut(MemberOut):
    activity_id: int = Field(description=ACTIVITY_ID)
    team_completed: bool = Field(
        description="True when this payment completed the team (its callback is then sent);"
        " a replayed settlement answers the same"
    )


class RefundIn(PurchaseIn):
    pass


class RefundOut(MemberOut):
    order_id: str = Field(description="The member order's id (12 digits)")
    refund_type: RefundType = Field(
        description="unpaid: the order was locked, not paid: it is closed (tradeOrderStatus 2),"
        " nothing to pay back. paid: paid while its team was forming (its slot and counts are"
        " given back): refunded (3), return the money (its order.refunded says the same)."
        " paid_team: paid in a complete team: refunded (3), return the money; the team becomes"
        " 3 (complete with refunds) and keeps its counts. failed_team: paid in a team that"
        " failed: its team.failed event listed this order, and that listing is the one"
        " instruction to return the money; recorded as refunded (3), no order.refunded is"
        " written. A repeated refund answers the same and changes nothing"
    )
    trade_order_status: OrderStatusValue = Field(description=ORDER_STATUS)
    team_status: TeamStatusValue = Field(description=f"{TEAM_STATUS}; as it is now")


class TeamOut(TeamCounts):
    status: TeamStatusValue = Field(description=TEAM_STATUS)
    # No notifyUrl: anyone may read a team; operators see the URL in the notify task view.


class OrderQuery(Body):
    source: Code = Field(description=f"{SOURCE}: as given at lock")
    channel: Code = Field(description=f"{CHANNEL}: as given at lock")
    user_id: Code = Field(description=f"{USER_ID}: the order must be theirs")


class OrderOut(Body):
    order_id: str = Field(description="The member order's id (12 digits)")
    team_id: str = Field(description=TEAM_ID)
    activity_id: int = Field(description=ACTIVITY_ID)
    goods_id: str = Field(description=GOODS_ID)
    user_id: str = Field(description=USER_ID)
    out_trade_no: str = Field(description="The merchant's order number")
    trade_order_status: OrderStatusValue = Field(description=ORDER_STATUS)
    team_status: TeamStatusValue = Field(description=f"The order's team: {TEAM_STATUS}")
    original_price: Amount = Field(description=f"Price before discount, {PRICE}")
    deduction_price: Amount = Field(description=f"originalPrice - payPrice, {PRICE}")
    pay_price: Amount = Field(description=f"What the shopper pays, {PRICE}")
    create_time: datetime = Field(description="When the order was locked")
    out_trade_time: datetime | None = Field(
        description="When the shopper paid, as the settlement said; null until then"
    )
    update_time: datetime = Field(description=f"{UPDATED} (locked, paid, closed, refunded)")


class Health(Body):
    status: str = Field(description='"up" (/healthz); "ready" or "unavailable" (/readyz)')
    checks: dict[str, str] = Field(
        {}, description='Each dependency checked: "ok" or "error: <exception type>"'
    )
