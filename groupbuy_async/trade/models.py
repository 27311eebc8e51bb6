"""What the trade functions take and answer: frozen dataclasses, no wire shape. http/ has the
JSON forms (camelCase, descriptions, validation) and converts at the edge; the worker, the CLI,
the demo data and the benchmarks call the domain with these."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar, dataclass_transform

from .rules import RefundType

T = TypeVar("T")


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
class Record:
    """The base of every record here: a frozen dataclass of keyword-only fields."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True, kw_only=True)(cls)


# --- shop front --------------------------------------------------------------------------


class Shopper(Record):
    """A user at one of a merchant's shops (source+channel)."""

    user_id: str
    source: str
    channel: str


class Purchase(Shopper):
    """An order, as the shop names it: the merchant's outTradeNo under its source+channel."""

    out_trade_no: str


class MarketQuery(Shopper):
    goods_id: str


class LockCommand(Purchase):
    activity_id: int
    goods_id: str
    # The url of one of the merchant's endpoints: the team's events go there only; None: to
    # every endpoint of the merchant that takes them.
    notify_url: str | None = None
    team_id: str | None = None  # None opens a team


class SettleCommand(Purchase):
    out_trade_time: datetime


class RefundCommand(Purchase):
    pass


class Prices(Record):
    original_price: Decimal
    deduction_price: Decimal
    pay_price: Decimal


class PriceTrial(Prices):
    goods_id: str


class Locked(Prices):
    """The order locked (or the one a repeated lock names)."""

    order_id: str
    team_id: str
    trade_order_status: int


class Settled(Record):
    """The payment recorded; team_completed when it was the team's last."""

    user_id: str
    team_id: str
    activity_id: int
    out_trade_no: str
    team_completed: bool


class Refunded(Record):
    """What a refund did: its type says whether money goes back (rules.RefundType)."""

    user_id: str
    order_id: str
    team_id: str
    out_trade_no: str
    refund_type: RefundType
    trade_order_status: int
    team_status: int


class TeamCounts(Record):
    """A team's size and members, and its window."""

    team_id: str
    activity_id: int
    target_count: int
    complete_count: int
    lock_count: int
    valid_start_time: datetime
    valid_end_time: datetime


class JoinableTeam(TeamCounts):
    """A team still open to join, with the time it has left."""

    valid_time_countdown: str


class TeamState(TeamCounts):
    """A team as it is now, its status included."""

    status: int


class ActivityStatistic(Record):
    """Teams and members of one activity so far."""

    all_team_count: int
    all_team_complete_count: int
    all_team_user_count: int


class MarketView(Record):
    """The offer: prices, the teams one may join and the activity's figures."""

    activity_id: int
    goods: PriceTrial
    team_list: list[JoinableTeam]
    team_statistic: ActivityStatistic


class OrderState(Prices):
    """One member order as the shop pulls it."""

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


class Page(Record, Generic[T]):
    """One keyset page in key order; next_cursor is None on the last page."""

    items: list[T]
    next_cursor: str | int | None


class Discount(Record):
    discount_name: str
    market_plan: str
    market_expr: str
    discount_desc: str = ""


class StoredDiscount(Discount):
    discount_id: str
    create_time: datetime
    update_time: datetime


class Sku(Record):
    goods_name: str
    original_price: Decimal
    source: str
    channel: str


class StoredSku(Sku):
    goods_id: str
    create_time: datetime
    update_time: datetime


class Goods(Record):
    """A goods item as an activity sells it: a SKU under one source+channel."""

    source: str
    channel: str
    goods_id: str


class Activity(Record):
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


class StoredActivity(Activity):
    activity_id: int
    create_time: datetime
    update_time: datetime
