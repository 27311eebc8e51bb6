"""Constraint violations become field-level messages that name no table or constraint."""

import pytest
from asyncpg.exceptions import PostgresError

from groupbuy_async import errors
from groupbuy_async.http.envelope import key_of, translate


def _violation(sqlstate: str, constraint: str | None, detail: str | None) -> Exception:
    fields = {
        "C": sqlstate,
        "M": 'violates constraint on table "secret_table"',
        "t": "secret_table",
    }
    if constraint is not None:
        fields["n"] = constraint
    if detail is not None:
        fields["D"] = detail
    return PostgresError.new(fields)


def test_key_of_reads_the_violating_key() -> None:
    detail = 'Key (goods_id, source, channel)=(g1, s01, c01) is not present in table "sku".'
    assert key_of(detail) == {"goods_id": "g1", "source": "s01", "channel": "c01"}
    assert key_of("Key (a, b)=(x, y, z) already exists.") == {}  # a value with ", " in it
    assert key_of(None) == key_of("Schlüssel (a)=(1) ist nicht vorhanden.") == {}


@pytest.mark.parametrize(
    ("sqlstate", "constraint", "detail", "error", "info"),
    [
        ("23503", "activity_discount_fkey",
         'Key (discount_id)=(d1) is not present in table "group_buy_discount".',
         errors.BadInput, "discountId d1 does not exist"),
        ("23503", "activity_discount_fkey", None, errors.BadInput, "discountId does not exist"),
        ("23503", "team_activity_fkey",
         'Key (activity_id)=(42) is not present in table "group_buy_activity".',
         errors.ActivityNotFound, "activityId 42 does not exist"),
        ("23503", "other_fkey", 'Key (x)=(1) is not present in table "t".',
         errors.BadInput, "refers to something that does not exist"),
        ("23505", "other_key", "Key (x)=(1) already exists.",
         errors.UniqueConflict, "already exists"),
        ("23502", None, None, errors.BadInput, "a required value is missing"),
        ("23514", "team_lock_count_within_target", None,
         errors.BadInput, "violates a rule of the data"),
    ],
)  # fmt: skip
def test_violations_are_translated_by_constraint_name(
    sqlstate: str,
    constraint: str | None,
    detail: str | None,
    error: type[errors.ServiceError],
    info: str,
) -> None:
    translated = translate(_violation(sqlstate, constraint, detail))
    assert type(translated) is error
    assert translated.info == info
