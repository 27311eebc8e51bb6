"""Pure decisions of the trade core: prices, eligibility, states and the events they send.
No I/O here."""

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from .. import errors
from ..callbacks.events import Event, EventType

CENT = Decimal("0.01")
ACTIVITY_EFFECTIVE = 1


class OrderStatus(IntEnum):
    """A member order: 0 -> 1 -> 3, or 0 -> 2 (sql/006_lifecycle.sql refuses anything else)."""

    LOCKED = 0  # unpaid: holds a slot and a take until paid, closed or refunded
    PAID = 1
    CLOSED = 2  # an unpaid lock released: payment timeout, cancel, or its team failed
    REFUNDED = 3  # paid, then refunded: the merchant returns the money


class TeamStatus(IntEnum):
    """A team: 0 -> 1 -> 3, or 0 -> 2. Only a forming team's counts change."""

    FORMING = 0
    COMPLETE = 1
    FAILED = 2  # its window ended before every member paid
    COMPLETE_WITH_REFUNDS = 3


class RefundType(StrEnum):
    UNPAID = "unpaid"  # a locked order cancelled: closed
    PAID = "paid"  # paid while its team was forming (slot and count given back) or failed
    PAID_TEAM = "paid_team"  # paid in a complete team: the team becomes 3
    # Paid in a team that failed: its team.failed listed it, which is its one refund
    # instruction; recording the refund writes no order.refunded.
    FAILED_TEAM = "failed_team"


# A merchant's source+channel pairs: what its API key may trade under and see.
Pairs = Collection[tuple[str, str]]


def pair_arrays(pairs: Pairs) -> tuple[list[str], list[str]]:
    """Pairs as two parallel arrays, for `(source, channel) IN (SELECT * FROM unnest(...))`."""
    ordered = sorted(pairs)
    return [p[0] for p in ordered], [p[1] for p in ordered]


class Row(Protocol):
    """A database row (asyncpg.Record) or a dict: read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


# An order event's data, in its order: each key and the order row's column it is taken from
# (here, and by the close cron's statement, which makes its bodies in SQL).
ORDER_DATA = (
    ("orderId", "order_id"),
    ("outTradeNo", "out_trade_no"),
    ("userId", "user_id"),
    ("teamId", "team_id"),
    ("activityId", "activity_id"),
)


def order_event(
    kind: EventType, order: Row, notify_url: str, refund_type: str | None = None
) -> Event:
    """order.closed / order.refunded for an order row (order_id, out_trade_no, user_id,
    team_id, activity_id)."""
    data: dict[str, Any] = {key: order[column] for key, column in ORDER_DATA}
    if refund_type is not None:
        data["refundType"] = refund_type
    return Event(
        kind, order["team_id"], order["activity_id"], notify_url, data, order_id=order["order_id"]
    )


def team_failed_event(
    team_id: str, activity_id: int, notify_url: str, out_trade_nos: list[str]
) -> Event:
    """team.failed: the paid orders (outTradeNoList) are the merchant's to refund."""
    data = {"teamId": team_id, "activityId": activity_id, "outTradeNoList": out_trade_nos}
    return Event(EventType.TEAM_FAILED, team_id, activity_id, notify_url, data)


@dataclass(frozen=True)
class Price:
    original: Decimal
    deduction: Decimal
    pay: Decimal


MAX_AMOUNT = Decimal("9999999999.99")  # what numeric(12,2) holds
RATE_PLACES = Decimal("0.0001")


def _number(text: str, places: Decimal = CENT) -> Decimal:
    """A non-negative amount that fits numeric(12,2) (or a rate with `places`): anything
    else ("1e999999999", "0.001") is refused when the discount is saved, not at lock."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0 or value > MAX_AMOUNT:
        raise ValueError(f"not a number between 0 and {MAX_AMOUNT}: {text!r}")
    if value != value.quantize(places):
        raise ValueError(f"too many decimal places (at most {places}): {text!r}")
    return value


# How a discount's marketExpr is written, by plan: what the API accepts when a discount is
# stored (OpenAPI states the same patterns). An amount fits numeric(12,2); a rate is in (0, 1].
_AMOUNT = r"(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?"
_RATE = r"0\.([1-9][0-9]{0,3}|0[1-9][0-9]{0,2}|00[1-9][0-9]?|000[1-9])|1(\.0{1,4})?"
MARKET_EXPRS: dict[str, tuple[str, str]] = {
    "ZJ": (f"^{_AMOUNT}$", 'an amount off, up to 2 decimals, e.g. "20" or "19.99"'),
    "MJ": (f"^{_AMOUNT},{_AMOUNT}$", '"threshold,minus", two amounts, e.g. "100,10"'),
    "ZK": (f"^({_RATE})$", 'a rate in (0, 1], up to 4 decimals, e.g. "0.8"'),
    "N": (f"^{_AMOUNT}$", 'the price to pay, up to 2 decimals, e.g. "1.99"'),
}


def check_market_expr(plan: str, expr: str) -> None:
    """A new discount's expression, as its plan's pattern says; raises ValueError if not.
    (Stored ones are read with parse_market_expr, which also takes what older versions
    stored, e.g. " 20".)"""
    pattern, what = MARKET_EXPRS.get(plan, ("", ""))
    if not pattern:
        raise ValueError(f"unknown market plan {plan!r}")
    if not re.fullmatch(pattern, expr):
        raise ValueError(f"{plan} expects {what}")
    parse_market_expr(plan, expr)


def parse_market_expr(plan: str, expr: str) -> tuple[Decimal, ...]:
    """Validate a discount expression for its plan; raises ValueError when it is malformed."""
    if plan == "MJ":
        parts = expr.split(",")
        if len(parts) != 2:
            raise ValueError('MJ expects "threshold,minus", e.g. "100,10"')
        return _number(parts[0]), _number(parts[1])
    if plan in ("ZJ", "N"):
        return (_number(expr),)
    if plan == "ZK":
        rate = _number(expr, RATE_PLACES)
        if not 0 < rate <= 1:
            raise ValueError("ZK expects a rate in (0, 1], e.g. 0.8")
        return (rate,)
    raise ValueError(f"unknown market plan {plan!r}")


def trial_price(original: Decimal, plan: str, expr: str) -> Price:
    """Pay price for a plan; deduction = original - pay. ZJ/MJ/ZK never go below 0.01."""
    args = parse_market_expr(plan, expr)
    floor = min(CENT, original)
    if plan == "ZJ":
        pay = max(original - args[0], floor)
    elif plan == "MJ":
        threshold, minus = args
        pay = max(original - minus, floor) if original >= threshold else original
    elif plan == "ZK":
        pay = max((original * args[0]).quantize(CENT, rounding=ROUND_HALF_UP), floor)
    else:
        pay = min(args[0], original)
    pay = pay.quantize(CENT, rounding=ROUND_HALF_UP)
    return Price(original=original, deduction=original - pay, pay=pay)


def check_activity_open(status: int, start: datetime, end: datetime, now: datetime) -> None:
    if status != ACTIVITY_EFFECTIVE:
        raise errors.ActivityNotEffective()
    if not start <= now <= end:
        raise errors.OutsideActivityTime()


# outTradeTime is stamped by the merchant's clock, which may drift from ours: a payment time
# is judged with this allowance on both sides. Whether a payment is in time is decided by the
# database's clock when it arrives (the order's deadline, the team's window); the stamp only
# has to be plausible.
CLOCK_SKEW = timedelta(minutes=5)


def check_trade_time(out_trade_time: datetime, valid_end: datetime) -> None:
    """E0106 for a payment stamped after the team's window (beyond the skew allowance)."""
    if out_trade_time > valid_end + CLOCK_SKEW:
        raise errors.TradeTimeOutsideWindow()


def check_paid_after_lock(out_trade_time: datetime, lock_time: datetime) -> None:
    """Bad input (400) for a payment stamped before its order was locked (beyond the skew
    allowance): no shopper pays for an order that does not exist yet."""
    if out_trade_time < lock_time - CLOCK_SKEW:
        minutes = int(CLOCK_SKEW.total_seconds() // 60)
        raise errors.BadInput(
            f"outTradeTime {out_trade_time.isoformat()} is before the order was locked"
            f" ({lock_time.isoformat()}) by more than the {minutes} minutes allowed for clock"
            " skew"
        )


def is_blacklisted(source: str, channel: str, blacklist: frozenset[str]) -> bool:
    return f"{source}{channel}" in blacklist


def countdown(valid_end: datetime, now: datetime) -> str:
    """Remaining team time as HH:mm:ss (hours may exceed 24), never negative."""
    left = max(valid_end - now, timedelta(0))
    total = int(left.total_seconds())
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def take_key_prefix(activity_id: int, user_id: str) -> str:
    """A live order holds one of the user's numbered take keys, this prefix + n for n in
    1..takeLimitCount ("{activityId}_{userId}_{n}"), under a unique index."""
    return f"{activity_id}_{user_id}_"
