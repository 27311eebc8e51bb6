"""The types whose JSON schema states the whole server rule: what the schema's pattern allows,
the server accepts (checked over generated values), and what it refuses, the server refuses."""

import re
from datetime import UTC
from typing import Annotated, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from groupbuy_async.callbacks.rules import url_problem
from groupbuy_async.http.schemas import Count
from groupbuy_async.http.wire import (
    TIME_PATTERN,
    URL_PATTERN,
    ApiTime,
    HttpUrlText,
    OrderStatusValue,
    WholeNumber,
)

URL = TypeAdapter(HttpUrlText)
TIME = TypeAdapter(ApiTime)


@settings(max_examples=200, database=None)
@given(st.from_regex(URL_PATTERN, fullmatch=True))
def test_every_url_the_pattern_allows_can_be_called_back(url: str) -> None:
    assert url_problem(url) is None
    if len(url) <= 2048:
        assert URL.validate_json(f'"{url}"') == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://shop.example/cb",
        "http://1.2.3/cb",  # another spelling of an IPv4 address
        "http://0x7f.0.0.1/cb",
        "http://2130706433/",
        "http://shop.example./cb",
        "http://shop.example/{cb}",  # not RFC 3986: percent-encode it
        "http://shop.example/caf\u00e9",
        "http://shop.example:65536/",
        "http://[::1/",
        "//shop.example/cb",
        "http://shop.example/cb\n",
    ],
)
def test_urls_outside_the_pattern_are_refused(url: str) -> None:
    assert not re.fullmatch(URL_PATTERN, url)
    with pytest.raises(ValidationError):
        URL.validate_python(url)


@settings(max_examples=200, database=None)
@given(st.from_regex(TIME_PATTERN, fullmatch=True))
def test_every_time_the_pattern_allows_is_one_the_database_can_hold(text: str) -> None:
    try:
        value = TIME.validate_json(f'"{text}"')
    except ValidationError as exc:  # only a day the month lacks: the format refuses it too
        assert "day is out of range for month" in str(exc), exc
        return
    assert 1969 <= value.astimezone(UTC).year <= 9999  # no OverflowError either


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",  # was a 500: year 0 in UTC
        "1969-12-31T23:59:59Z",
        "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
        "10000-01-01T00:00:00Z",
        "2026-05-01T10:00:00",  # no offset
        "2026-05-01 10:00:00Z",
        "2026-05-01T10:00:00+0800",
        "2026-05-01T10:00:00.1234567Z",
        "2026-05-01t10:00:00z",
    ],
)
def test_times_outside_the_pattern_are_refused(text: str) -> None:
    assert not re.fullmatch(TIME_PATTERN, text)
    with pytest.raises(ValidationError, match="RFC 3339"):
        TIME.validate_json(f'"{text}"')


def test_a_status_is_an_integer_of_its_enum() -> None:
    status = TypeAdapter(OrderStatusValue)
    assert status.validate_python(3) == 3
    with pytest.raises(ValidationError, match="must be one of 0, 1, 2, 3"):
        status.validate_python(4)
    schema = status.json_schema()
    assert (schema["type"], schema["enum"]) == ("integer", [0, 1, 2, 3])
    assert schema["x-enum-varnames"] == ["LOCKED", "PAID", "CLOSED", "REFUNDED"]


INTEGERS: list[TypeAdapter[int]] = [
    TypeAdapter(Count),
    TypeAdapter(Annotated[Literal[0, 1], WholeNumber]),
]


@pytest.mark.parametrize(("raw", "read"), [("1", 1), ("1.0", 1), ("1e0", 1)])
def test_an_integer_is_any_json_number_without_a_fraction(raw: str, read: int) -> None:
    """JSON Schema's integer, which OpenAPI promises: 1.0 was refused by strict validation."""
    for kind in INTEGERS:
        assert kind.validate_json(raw, strict=True) == read


@pytest.mark.parametrize("raw", ["true", "1.5", '"1"'])
def test_what_json_schema_calls_no_integer_is_refused(raw: str) -> None:
    for kind in INTEGERS:
        with pytest.raises(ValidationError):
            kind.validate_json(raw, strict=True)
