"""Pure decisions: prices, eligibility, countdown, retry schedule. No I/O."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from groupbuy_async import errors
from groupbuy_async.http.jsonenc import dumps
from groupbuy_async.settings import parse_schedule
from groupbuy_async.trade.rules import (
    CLOCK_SKEW,
    check_activity_open,
    check_market_expr,
    check_paid_after_lock,
    check_trade_time,
    countdown,
    is_blacklisted,
    parse_market_expr,
    take_key_prefix,
    trial_price,
)

D = Decimal


@pytest.mark.parametrize(
    ("original", "plan", "expr", "pay"),
    [
        ("100.00", "ZJ", "20", "80.00"),
        ("10.00", "ZJ", "20", "0.01"),
        ("100.00", "MJ", "100,10", "90.00"),
        ("99.99", "MJ", "100,10", "99.99"),
        ("5.00", "MJ", "1,10", "0.01"),
        ("100.00", "ZK", "0.8", "80.00"),
        ("0.05", "ZK", "0.1", "0.01"),
        ("10.01", "ZK", "0.85", "8.51"),  # 8.5085 rounds half-up to the cent, not to whole yuan
        ("10.03", "ZK", "0.5", "5.02"),  # 5.015 -> 5.02 (half-up and half-even agree)
        # Real ties where half-even would differ: they must go up.
        ("10.05", "ZK", "0.5", "5.03"),  # 5.025 -> 5.03 (half-even: 5.02)
        ("100.00", "N", "1.99", "1.99"),
        ("1.00", "N", "1.99", "1.00"),
    ],
)
def test_trial_price(original: str, plan: str, expr: str, pay: str) -> None:
    price = trial_price(D(original), plan, expr)
    assert price.pay == D(pay)
    assert price.deduction == D(original) - D(pay)
    assert price.pay.as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("plan", "expr"),
    [
        ("MJ", "100"),
        ("MJ", "a,b"),
        ("ZK", "1.5"),
        ("ZK", "0"),
        ("ZJ", "-1"),
        ("N", "NaN"),
        ("X", "1"),
        ("ZJ", "1e999999999"),  # accepted once, then every lock and trial was a 500
        ("N", "1e11"),
        ("MJ", "100,1e20"),
        ("ZJ", "0.001"),
        ("ZK", "0.00001"),
    ],
)
def test_malformed_market_expr_is_refused(plan: str, expr: str) -> None:
    with pytest.raises(ValueError):
        parse_market_expr(plan, expr)
    with pytest.raises(ValueError):
        check_market_expr(plan, expr)


@pytest.mark.parametrize(
    ("plan", "expr"),
    [
        ("ZJ", " 20"),
        ("ZJ", "20.000"),
        ("ZJ", "+5"),
        ("ZJ", "1e1"),
        ("ZJ", "020"),
        ("ZJ", "1_000"),
        ("N", ".5"),
        ("MJ", "100, 10"),
        ("ZK", ".5"),
        ("ZK", "01"),
        ("ZK", "0.80000"),
    ],
)
def test_a_new_expression_is_written_as_its_pattern_says(plan: str, expr: str) -> None:
    """Decimal reads these, but OpenAPI's pattern for the plan refuses them: so does the API
    (the patterns are what a generated client checks). Stored ones still price."""
    parse_market_expr(plan, expr)
    with pytest.raises(ValueError, match=f"{plan} expects"):
        check_market_expr(plan, expr)


@pytest.mark.parametrize(
    ("plan", "expr"),
    [
        ("ZJ", "0"),
        ("ZJ", "9999999999.99"),
        ("N", "1.9"),
        ("MJ", "100,10"),
        ("MJ", "0.01,0"),
        ("ZK", "1"),
        ("ZK", "1.0000"),
        ("ZK", "0.0001"),
        ("ZK", "0.8"),
        ("ZK", "0.085"),
    ],
)
def test_expressions_the_pattern_allows_are_accepted(plan: str, expr: str) -> None:
    check_market_expr(plan, expr)


def test_activity_must_be_effective_and_in_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)
    check_activity_open(1, now - day, now + day, now)
    with pytest.raises(errors.ActivityNotEffective):
        check_activity_open(0, now - day, now + day, now)
    with pytest.raises(errors.OutsideActivityTime):
        check_activity_open(1, now + timedelta(seconds=1), now + day, now)
    with pytest.raises(errors.OutsideActivityTime):
        check_activity_open(1, now - day, now - timedelta(seconds=1), now)


def test_trade_time_must_not_be_after_the_team_window_beyond_the_clock_skew() -> None:
    end = datetime(2026, 1, 1, tzinfo=UTC)
    check_trade_time(end - timedelta(minutes=5), end)
    check_trade_time(end, end)
    check_trade_time(end + CLOCK_SKEW, end)  # the merchant's clock may run ahead of ours
    with pytest.raises(errors.TradeTimeOutsideWindow):
        check_trade_time(end + CLOCK_SKEW + timedelta(seconds=1), end)


def test_trade_time_must_not_be_before_the_lock_beyond_the_clock_skew() -> None:
    locked = datetime(2026, 1, 1, tzinfo=UTC)
    assert timedelta(minutes=5) == CLOCK_SKEW
    check_paid_after_lock(locked, locked)
    check_paid_after_lock(locked - CLOCK_SKEW, locked)  # the merchant's clock may lag
    for early in (locked - CLOCK_SKEW - timedelta(seconds=1), datetime(1970, 1, 1, tzinfo=UTC)):
        with pytest.raises(errors.BadInput, match="before the order was locked"):
            check_paid_after_lock(early, locked)


def test_countdown_formats_remaining_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert countdown(now + timedelta(minutes=14, seconds=5), now) == "00:14:05"
    assert countdown(now + timedelta(hours=25, seconds=1), now) == "25:00:01"
    assert countdown(now - timedelta(seconds=5), now) == "00:00:00"


def test_blacklist_matches_source_and_channel_together() -> None:
    assert is_blacklisted("s02", "c02", frozenset({"s02c02"}))
    assert not is_blacklisted("s02", "c01", frozenset({"s02c02"}))


def test_take_keys_are_numbered_per_activity_and_user() -> None:
    assert take_key_prefix(100123, "xfg") + "2" == "100123_xfg_2"


def test_retry_schedule_parses_units_and_plain_seconds() -> None:
    assert parse_schedule("15s,3m,1h") == (
        timedelta(seconds=15),
        timedelta(minutes=3),
        timedelta(hours=1),
    )
    assert parse_schedule("15,15") == (timedelta(seconds=15),) * 2
    with pytest.raises(ValueError):
        parse_schedule("soon")


def test_money_is_encoded_as_a_number_with_two_decimals() -> None:
    text = dumps({"p": D("80"), "q": [D("0.1")], "s": "\x00money:1"})
    assert text == '{"p":80.00,"q":[0.10],"s":"\\u0000money:1"}'
