"""Request and response bodies. JSON is camelCase; validation is strict (no type coercion)."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ..callbacks.rules import url_problem
from ..trade.rules import parse_market_expr

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
Count = Annotated[int, Field(ge=1, le=100_000)]
TeamId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[0-9]+$")]
ActivityId = Annotated[int, Field(ge=1, le=2**62)]


def _absolute_http_url(url: str) -> str:
    problem = url_problem(url)
    if problem:
        raise ValueError(problem.removeprefix("invalid notifyUrl: "))
    return url


HttpUrlText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048, pattern=r"^[^\x00-\x20\x7f]+$"),
    AfterValidator(_absolute_http_url),
]


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
    " before it filled)"
)
NOTIFY_STATUS = (
    "Callback status: 0 initial (not yet attempted), 1 success, 2 retry (an attempt failed,"
    " another is scheduled), 3 error (given up; an operator may replay it)"
)
PRICE = "in currency units, a JSON number with two decimals"

# Every path parameter of the API, validated (and documented) by these types.
PATH_PARAMS: dict[str, Any] = {
    "discountId": Annotated[Code, Field(description="Discount id, chosen by the operator")],
    "goodsId": Annotated[Code, Field(description=GOODS_ID)],
    "activityId": Annotated[ActivityId, Field(description=ACTIVITY_ID)],
    "teamId": Annotated[TeamId, Field(description=TEAM_ID)],
}


class Body(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, strict=True, frozen=True
    )


# --- admin -----------------------------------------------------------------------------


class DiscountIn(Body):
    discount_name: Name = Field(description="Display name")
    discount_desc: Text = Field("", description="Free-text description")
    market_plan: Literal["ZJ", "MJ", "ZK", "N"] = Field(
        description="How the pay price is computed (marketExpr is its parameter): ZJ a fixed"
        " amount off, MJ an amount off from a threshold, ZK a rate, N a fixed price"
    )
    market_expr: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description='The plan\'s parameter: ZJ "20" pays 20.00 less; MJ "100,10" pays 10.00 less'
        ' when the original price is at least 100.00; ZK "0.8" pays 0.8 x the original, rounded'
        ' half-up to the cent; N "1.99" pays 1.99 (never more than the original). ZJ, MJ and ZK'
        " never go below 0.01; deductionPrice = originalPrice - payPrice"
    )

    @model_validator(mode="after")
    def _expr_fits_plan(self) -> "DiscountIn":
        parse_market_expr(self.market_plan, self.market_expr)
        return self


class DiscountOut(DiscountIn):
    discount_id: Code = Field(description="Discount id (the path's discountId)")
    create_time: datetime = Field(description=CREATED)
    update_time: datetime = Field(description=UPDATED)


class SkuIn(Body):
    goods_name: Name = Field(description="Display name")
    original_price: Money = Field(description=f"Price before any discount, {PRICE}")
    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)


class SkuOut(SkuIn):
    goods_id: Code = Field(description="Goods (SKU) id (the path's goodsId)")
    create_time: datetime = Field(description=CREATED)
    update_time: datetime = Field(description=UPDATED)


class GoodsRef(Body):
    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)
    goods_id: Code = Field(description=f"{GOODS_ID}, stored with PUT /api/v1/admin/skus")


class ActivityIn(Body):
    activity_name: Name = Field(description="Display name")
    discount_id: Code = Field(description="The discount that prices this activity's goods")
    group_type: Literal[0, 1] = Field(
        0,
        description="How a team forms (the original's group_type): 0 automatically, 1 on"
        " reaching the target. Stored and returned as given: here a team completes when"
        " `target` members have paid, whichever the value",
    )
    take_limit_count: Count = Field(
        1, description="Most orders one user may lock in this activity (paid or not)"
    )
    target: Annotated[int, Field(ge=1, le=1000)] = Field(
        1, description="Team size: members who must pay for a team to complete"
    )
    valid_time: Annotated[int, Field(ge=1, le=60 * 24 * 30)] = Field(
        15, description="How long a team may take to fill, in minutes from its opening"
    )
    status: Literal[0, 1, 2, 3] = Field(
        0,
        description="Activity status: 0 created, 1 effective, 2 expired, 3 abandoned."
        " Orders lock only while it is 1 (effective) and between startTime and endTime",
    )
    start_time: AwareDatetime = Field(description="When orders may start locking (with offset)")
    end_time: AwareDatetime = Field(description="When locking ends; after startTime")
    goods: Annotated[list[GoodsRef], Field(max_length=1000)] = Field(
        [], description="Goods sold in this activity; a goods item belongs to one activity"
    )

    @model_validator(mode="after")
    def _sane(self) -> "ActivityIn":
        if self.end_time <= self.start_time:
            raise ValueError("endTime must be after startTime")
        keys = [(g.source, g.channel, g.goods_id) for g in self.goods]
        if len(set(keys)) != len(keys):
            raise ValueError("goods lists the same source/channel/goodsId twice")
        return self


class ActivityOut(ActivityIn):
    activity_id: ActivityId = Field(description="Activity id (the path's activityId)")
    create_time: datetime = Field(description=CREATED)
    update_time: datetime = Field(description=UPDATED)


# --- shop front ------------------------------------------------------------------------


class MarketConfigQuery(Body):
    user_id: Code = Field(description=USER_ID)
    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)
    goods_id: Code = Field(description=GOODS_ID)


class GoodsTrial(Body):
    goods_id: str = Field(description=GOODS_ID)
    original_price: Amount = Field(description=f"Price before discount, {PRICE}")
    deduction_price: Amount = Field(description=f"originalPrice - payPrice, {PRICE}")
    pay_price: Amount = Field(description=f"What the shopper pays in a team, {PRICE}")


class TeamBrief(Body):
    team_id: str = Field(description=TEAM_ID)
    activity_id: int = Field(description=ACTIVITY_ID)
    target_count: int = Field(description="Team size: members needed to complete")
    complete_count: int = Field(description="Members who have paid")
    lock_count: int = Field(description="Members who have locked an order (paid or not)")
    valid_start_time: datetime = Field(description="When the team opened")
    valid_end_time: datetime = Field(description="When the team's window ends")
    valid_time_countdown: str = Field(description="Time left in the window, HH:mm:ss")


class TeamStatistic(Body):
    all_team_count: int = Field(description="Teams of this activity, in any status")
    all_team_complete_count: int = Field(description="Complete teams (status 1)")
    all_team_user_count: int = Field(description="Locked orders over all teams (sum of lockCount)")


class MarketConfig(Body):
    activity_id: int = Field(description=ACTIVITY_ID)
    goods: GoodsTrial = Field(description="The goods' price trial")
    team_list: list[TeamBrief] = Field(
        description="Forming teams: the user's own (at most one) first, then up to two others"
        " the user can join"
    )
    team_statistic: TeamStatistic = Field(description="Counts over the activity's teams")


class LockIn(Body):
    user_id: Code = Field(description=USER_ID)
    team_id: TeamId | None = Field(None, description="Team to join; omit to open a new team")
    activity_id: ActivityId = Field(description=ACTIVITY_ID)
    goods_id: Code = Field(description=GOODS_ID)
    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)
    out_trade_no: Code = Field(
        description="The merchant's order number, unique per source and channel: locking it"
        " again returns the same order"
    )
    notify_url: HttpUrlText = Field(
        description="Absolute http(s) URL called back (see webhooks: teamCompleted) when the"
        " team completes. Kept from the order that opens the team; ignored when joining"
    )


class LockOut(Body):
    order_id: str = Field(description="The member order's id (12 digits)")
    team_id: str = Field(description=f"{TEAM_ID}: the team opened or joined")
    original_price: Amount = Field(description=f"Price before discount, {PRICE}")
    deduction_price: Amount = Field(description=f"originalPrice - payPrice, {PRICE}")
    pay_price: Amount = Field(description=f"What the shopper pays, {PRICE}")
    trade_order_status: int = Field(description="Member order status: 0 locked, 1 paid")


class SettleIn(Body):
    source: Code = Field(description=SOURCE)
    channel: Code = Field(description=CHANNEL)
    user_id: Code = Field(description=USER_ID)
    out_trade_no: Code = Field(description="The merchant's order number given at lock")
    out_trade_time: AwareDatetime = Field(
        description="When the shopper paid (with offset); not after the team's validEndTime"
    )


class SettleOut(Body):
    user_id: str = Field(description=USER_ID)
    team_id: str = Field(description=TEAM_ID)
    activity_id: int = Field(description=ACTIVITY_ID)
    out_trade_no: str = Field(description="The merchant's order number")
    team_completed: bool = Field(
        description="True when this payment completed the team (its callback is then sent);"
        " a replayed settlement answers the same"
    )


class TeamOut(Body):
    team_id: str = Field(description=TEAM_ID)
    activity_id: int = Field(description=ACTIVITY_ID)
    target_count: int = Field(description="Team size: members needed to complete")
    lock_count: int = Field(description="Members who have locked an order (paid or not)")
    complete_count: int = Field(description="Members who have paid")
    status: int = Field(description=TEAM_STATUS)
    valid_start_time: datetime = Field(description="When the team opened")
    valid_end_time: datetime = Field(
        description="When the team's window ends: opening + the activity's validTime minutes"
    )
    # No notifyUrl: anyone may read a team; operators see the URL in the notify task view.


class Health(Body):
    status: str = Field(description='"up" (/healthz); "ready" or "unavailable" (/readyz)')
    checks: dict[str, str] = Field(
        {}, description='Each dependency checked: "ok" or "error: <exception type>"'
    )


# --- callbacks -----------------------------------------------------------------------


class TeamCompletedEvent(Body):
    """The callback's body: POSTed to the team's notifyUrl when its last member pays."""

    team_id: str = Field(description=f"The completed team. {TEAM_ID}")
    out_trade_no_list: list[str] = Field(
        description="The merchant's outTradeNo of every member, in the order they locked"
    )
    activity_id: int = Field(description=ACTIVITY_ID)
    event_id: str = Field(
        description="Event id (UUID), equal to the webhook-id header and the same on every"
        " retry: deduplicate on it"
    )


class NotifyTaskQuery(Body):
    status: Annotated[int, Field(ge=0, le=3)] | None = Field(
        None, description=f"Only tasks in this status. {NOTIFY_STATUS}"
    )
    team_id: TeamId | None = Field(None, description=f"Only this team's task. {TEAM_ID}")
    limit: Annotated[int, Field(ge=1, le=1000)] = Field(100, description="Most tasks listed")


class NotifyRunIn(Body):
    team_id: TeamId | None = Field(
        None, description="Deliver only this team's task (if due); omit for every due task"
    )


class NotifyCounts(Body):
    wait_count: int = Field(description="Due tasks attempted in this run")
    success_count: int = Field(description="Delivered (now status 1)")
    retry_count: int = Field(description="Failed, retry scheduled (now status 2)")
    error_count: int = Field(description="Failed for good (now status 3)")


class NotifyTaskOut(Body):
    team_id: str = Field(description=TEAM_ID)
    activity_id: int = Field(description=ACTIVITY_ID)
    event_id: str = Field(
        description="The event id (UUID): the callback's webhook-id and eventId, the same on"
        " every attempt"
    )
    notify_url: str = Field(description="Where the callback is POSTed (the team opener's)")
    notify_count: int = Field(description="Attempts made so far, replays included")
    notify_status: int = Field(description=NOTIFY_STATUS)
    # Only pending tasks (0, 2) have a next attempt.
    next_attempt_at: datetime | None = Field(
        description="When the next attempt falls due; null once finished (status 1 or 3)"
    )
    last_http_status: int | None = Field(
        description="HTTP status of the last attempt; null before the first or when it got no"
        " answer (timeout, connection error, …)"
    )
    last_error: str | None = Field(description="Why the last attempt failed; null on success")
    create_time: datetime = Field(description="When the team completed and the task was written")
    update_time: datetime = Field(description=UPDATED)


class NotifyAttemptOut(Body):
    attempt: int = Field(description="Attempt number, 1-based, counted over the task's life")
    started_at: datetime = Field(description="When the attempt started")
    duration_ms: int = Field(description="How long it took, in milliseconds")
    http_status: int | None = Field(
        description="The merchant's HTTP status; null when no answer came"
    )
    response_body: str | None = Field(
        description="The merchant's answer body, its first 2 KB (2048 bytes, decoded as UTF-8);"
        " null when no answer came"
    )
    error: str | None = Field(description="Why the attempt failed; null on success")


class NotifyTaskDetail(NotifyTaskOut):
    attempts: list[NotifyAttemptOut] = Field(description="Every attempt, oldest first")


class ReceivedCallback(Body):
    webhook_id: str = Field(description="The webhook-id header (the event id)")
    received_at: datetime = Field(description="When the mock merchant first received it")
    signature_verified: bool = Field(
        description="True when webhook-signature verified against GROUPBUY_NOTIFY_SECRET;"
        " false when no secret is set"
    )
    payload: Any = Field(description="The body as received: JSON, or the text if not JSON")


# --- admin lists (keyset pages in key order) -------------------------------------------

PageLimit = Annotated[int, Field(ge=1, le=500)]


_LIMIT = "Most items on one page (1-500)"
_AFTER = "The previous page's nextCursor; absent for the first page"
_NEXT = "Pass as `after` for the next page; null on the last page"


class CodePageQuery(Body):
    limit: PageLimit = Field(100, description=_LIMIT)
    after: Code | None = Field(None, description=_AFTER)


class ActivityPageQuery(Body):
    limit: PageLimit = Field(100, description=_LIMIT)
    after: ActivityId | None = Field(None, description=_AFTER)


class DiscountPage(Body):
    items: list[DiscountOut] = Field(description="Discounts in discountId order")
    next_cursor: str | None = Field(description=_NEXT)


class SkuPage(Body):
    items: list[SkuOut] = Field(description="Goods in goodsId order")
    next_cursor: str | None = Field(description=_NEXT)


class ActivityPage(Body):
    items: list[ActivityOut] = Field(description="Activities in activityId order")
    next_cursor: int | None = Field(description=_NEXT)
