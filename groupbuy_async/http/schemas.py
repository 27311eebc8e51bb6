"""Request and response bodies. JSON is camelCase; validation is strict (no type coercion)."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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
Count = Annotated[int, Field(ge=1, le=100_000)]
TeamId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[0-9]+$")]
ActivityId = Annotated[int, Field(ge=1, le=2**62)]


def _absolute_http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http or https URL")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return url


HttpUrlText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048, pattern=r"^[^\x00-\x20\x7f]+$"),
    AfterValidator(_absolute_http_url),
]


# Every path parameter of the API, validated (and documented) by these types.
PATH_PARAMS: dict[str, Any] = {
    "discountId": Code,
    "goodsId": Code,
    "activityId": ActivityId,
    "teamId": TeamId,
}


class Body(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, strict=True, frozen=True
    )


# --- admin -----------------------------------------------------------------------------


class DiscountIn(Body):
    discount_name: Name
    discount_desc: Text = ""
    market_plan: Literal["ZJ", "MJ", "ZK", "N"]
    market_expr: Annotated[str, StringConstraints(min_length=1, max_length=64)]

    @model_validator(mode="after")
    def _expr_fits_plan(self) -> "DiscountIn":
        parse_market_expr(self.market_plan, self.market_expr)
        return self


class DiscountOut(DiscountIn):
    discount_id: Code
    create_time: datetime
    update_time: datetime


class SkuIn(Body):
    goods_name: Name
    original_price: Money
    source: Code
    channel: Code


class SkuOut(SkuIn):
    goods_id: Code
    create_time: datetime
    update_time: datetime


class GoodsRef(Body):
    source: Code
    channel: Code
    goods_id: Code


class ActivityIn(Body):
    activity_name: Name
    discount_id: Code
    group_type: Literal[0, 1] = 0
    take_limit_count: Count = 1
    target: Annotated[int, Field(ge=1, le=1000)] = 1
    valid_time: Annotated[int, Field(ge=1, le=60 * 24 * 30)] = 15
    status: Literal[0, 1, 2, 3] = 0
    start_time: AwareDatetime
    end_time: AwareDatetime
    goods: Annotated[list[GoodsRef], Field(max_length=1000)] = []

    @model_validator(mode="after")
    def _sane(self) -> "ActivityIn":
        if self.end_time <= self.start_time:
            raise ValueError("endTime must be after startTime")
        keys = [(g.source, g.channel, g.goods_id) for g in self.goods]
        if len(set(keys)) != len(keys):
            raise ValueError("goods lists the same source/channel/goodsId twice")
        return self


class ActivityOut(ActivityIn):
    activity_id: ActivityId
    create_time: datetime
    update_time: datetime


# --- shop front ------------------------------------------------------------------------


class MarketConfigQuery(Body):
    user_id: Code
    source: Code
    channel: Code
    goods_id: Code


class GoodsTrial(Body):
    goods_id: str
    original_price: Decimal
    deduction_price: Decimal
    pay_price: Decimal


class TeamBrief(Body):
    team_id: str
    activity_id: int
    target_count: int
    complete_count: int
    lock_count: int
    valid_start_time: datetime
    valid_end_time: datetime
    valid_time_countdown: str


class TeamStatistic(Body):
    all_team_count: int
    all_team_complete_count: int
    all_team_user_count: int


class MarketConfig(Body):
    activity_id: int
    goods: GoodsTrial
    team_list: list[TeamBrief]
    team_statistic: TeamStatistic


class LockIn(Body):
    user_id: Code
    team_id: TeamId | None = None
    activity_id: ActivityId
    goods_id: Code
    source: Code
    channel: Code
    out_trade_no: Code
    notify_url: HttpUrlText


class LockOut(Body):
    order_id: str
    team_id: str
    original_price: Decimal
    deduction_price: Decimal
    pay_price: Decimal
    trade_order_status: int


class SettleIn(Body):
    source: Code
    channel: Code
    user_id: Code
    out_trade_no: Code
    out_trade_time: AwareDatetime


class SettleOut(Body):
    user_id: str
    team_id: str
    activity_id: int
    out_trade_no: str
    team_completed: bool


class TeamOut(Body):
    team_id: str
    activity_id: int
    target_count: int
    lock_count: int
    complete_count: int
    status: int
    valid_start_time: datetime
    valid_end_time: datetime
    # No notifyUrl: anyone may read a team; operators see the URL in the notify task view.


class Health(Body):
    status: str
    checks: dict[str, str] = {}


# --- callbacks -----------------------------------------------------------------------


class NotifyTaskQuery(Body):
    status: Annotated[int, Field(ge=0, le=3)] | None = None
    team_id: TeamId | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class NotifyRunIn(Body):
    team_id: TeamId | None = None


class NotifyCounts(Body):
    wait_count: int
    success_count: int
    retry_count: int
    error_count: int


class NotifyTaskOut(Body):
    team_id: str
    activity_id: int
    event_id: str
    notify_url: str
    notify_count: int
    notify_status: int
    # Only pending tasks (0, 2) have a next attempt.
    next_attempt_at: datetime | None
    last_http_status: int | None
    last_error: str | None
    create_time: datetime
    update_time: datetime


class NotifyAttemptOut(Body):
    attempt: int
    started_at: datetime
    duration_ms: int
    http_status: int | None
    response_body: str | None
    error: str | None


class NotifyTaskDetail(NotifyTaskOut):
    attempts: list[NotifyAttemptOut]


class ReceivedCallback(Body):
    webhook_id: str
    received_at: datetime
    signature_verified: bool
    payload: Any
