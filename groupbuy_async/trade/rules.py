"""Pure decisions of the trade core: prices and eligibility. No I/O here."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from .. import errors

CENT = Decimal("0.01")
ACTIVITY_EFFECTIVE = 1


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


def check_trade_time(out_trade_time: datetime, valid_end: datetime) -> None:
    # Only the end bounds it, as in the original: merchants stamp payments to the second
    # and their clocks drift, so a lower bound would refuse genuine early payments.
    if out_trade_time > valid_end:
        raise errors.TradeTimeOutsideWindow()


def is_blacklisted(source: str, channel: str, blacklist: frozenset[str]) -> bool:
    return f"{source}{channel}" in blacklist


def countdown(valid_end: datetime, now: datetime) -> str:
    """Remaining team time as HH:mm:ss (hours may exceed 24), never negative."""
    left = max(valid_end - now, timedelta(0))
    total = int(left.total_seconds())
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def biz_ids(activity_id: int, user_id: str, take_limit: int) -> list[str]:
    return [f"{activity_id}_{user_id}_{n}" for n in range(1, take_limit + 1)]
