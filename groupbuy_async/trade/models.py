"""What the trade functions take and answer: frozen dataclasses, no wire shape. http/ has the
JSON forms (camelCase, descriptions, validation) and converts at the edge; the worker, the CLI,
the demo data and the benchmarks call the domain with these."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Generic, TypeVar

from .rules import RefundType

T = TypeVar("T")

# --- shop front --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Shopper:
    """A user at one of a merchant's shops (source+channel)."""

    user_id: str
    source: str
    channel: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Purchase(Shopper):
    """An order, as the shop names it: the merchant's outTradeNo under its source+channel."""

    out_trade_no: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LockCommand(Purchase):
    activity_id: int
    goods_id: str
    # The url of one of the merchant's endpoints: the team's events go there only; None: to
    # every endpoint of the merchant that takes them.
    notify_url: str | None = None
    team_id: str | None = None  # None opens a team


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleCommand(Purchase):
    out_trade_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundCommand(Purchase):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Prices:
    original_price: Decimal
    deduction_price: Decimal
    pay_price: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class Locked(Prices):
    order_id: str
    team_id: str
    trade_order_status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Settled:
    user_id: str
    team_id: str
    activity_id: int
    out_trade_no: str
    team_completed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Refunded:
    user_id: str
    order_id: str
    team_id: str
    out_trade_no: str
    refund_type: RefundType
    trade_order_status: int
    team_status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketQuery(Shopper):
    goods_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTrial(Prices):
    goods_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamCounts:
    team_id: str
    activity_id: int
    target_count: int
    complete_count: int
    lock_count: int
    valid_start_time: datetime
    valid_end_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinableTeam(TeamCounts):
    valid_time_countdown: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamState(TeamCounts):
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityStatistic:
    all_team_count: int
    all_team_complete_count: int
    all_team_user_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketView:
    activity_id: int
    goods: PriceTrial
    team_list: list[JoinableTeam]
    team_statistic: ActivityStatistic


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderState(Prices):
    order_id: str
    team_id: str
    activity_id: int
    goods_id: str
    user_id: str
    out_trade_no: str
    trade_order_status: int
    team_status: int
    create_time: datetime
    out_trade_time: datetime | None
    update_time: datetime


# --- catalog (the operator's configuration) ------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Page(Generic[T]):
    """One keyset page in key order; next_cursor is None on the last page."""

    items: list[T]
    next_cursor: str | int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Discount:
    discount_name: str
    market_plan: str
    market_expr: str
    discount_desc: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredDiscount(Discount):
    discount_id: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Sku:
    goods_name: str
    original_price: Decimal
    source: str
    channel: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSku(Sku):
    goods_id: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Goods:
    """A goods item as an activity sells it: a SKU under one source+channel."""

    source: str
    channel: str
    goods_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    activity_name: str
    discount_id: str
    start_time: datetime
    end_time: datetime
    group_type: int = 0
    take_limit_count: int = 1
    target: int = 1
    valid_time: int = 15  # minutes a team may take to fill
    pay_timeout_seconds: int = 900
    status: int = 0
    goods: list[Goods] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredActivity(Activity):
    activity_id: int
    create_time: datetime
    update_time: datetime
