"""Types of the API whose JSON schema states the whole rule the server enforces, so that a
client generated from OpenAPI accepts exactly what the server accepts: status integers as enums,
date-times PostgreSQL can hold, notify URLs a callback can reach."""

import re
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from ..callbacks.rules import NotifyStatus, url_problem
from ..trade.rules import OrderStatus, TeamStatus

# --- status integers -------------------------------------------------------------------


@dataclass(frozen=True)
class Members:
    """An integer that is a value of `kind`: a plain integer on the wire, in the schema an
    enum of the values, named by x-enum-varnames (the field's description says what each
    value means)."""

    kind: type[IntEnum]

    def __call__(self, value: int) -> int:
        if value not in self.kind._value2member_map_:
            raise ValueError(f"must be one of {', '.join(str(m.value) for m in self.kind)}")
        return int(value)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["enum"] = [m.value for m in self.kind]
        out["x-enum-varnames"] = [m.name for m in self.kind]
        return out


OrderStatusValue = Annotated[int, AfterValidator(Members(OrderStatus)), Members(OrderStatus)]
TeamStatusValue = Annotated[int, AfterValidator(Members(TeamStatus)), Members(TeamStatus)]
NotifyStatusValue = Annotated[int, AfterValidator(Members(NotifyStatus)), Members(NotifyStatus)]

# --- integers --------------------------------------------------------------------------


def _whole_number(value: Any) -> Any:
    # JSON Schema's integer is any number without a fraction, 1.0 and 1e2 included, and never
    # true or false (which a Literal of ints would take as 1 and 0); "1" and 1.5 stay refused.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true or false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = BeforeValidator(_whole_number)

# --- date-times --------------------------------------------------------------------------

# RFC 3339 with an offset, written with the year 1970 to 9999: what Python and the database
# driver carry once converted to UTC (year 9999 only at UTC or east of it, which stays in 9999).
_YEAR = "(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
_DATE = "-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
_EAST = "(Z|[+]([01][0-9]|2[0-3]):[0-5][0-9])"
_ANY_OFFSET = "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
TIME_PATTERN = f"^({_YEAR}{_DATE}{_TIME}{_ANY_OFFSET}|9999{_DATE}{_TIME}{_EAST})$"
TIME_RULE = (
    "RFC 3339 with an offset (Z or +-hh:mm), e.g. 2026-05-01T10:00:00+08:00, the year 1970 to"
    " 9999 as written (9999 only with Z or a + offset)"
)


def _time_text(value: Any) -> Any:
    """A text read as the pattern says (strict validation takes no text after this step)."""
    if not isinstance(value, str):
        return value
    if not _TIME_RE.fullmatch(value):
        raise ValueError(f"must be {TIME_RULE}")
    return datetime.fromisoformat(value)  # ValueError for a day the month lacks


def _time_in_range(value: datetime) -> datetime:
    # What the pattern says of a text, for a datetime given from Python.
    offset = value.utcoffset()
    if value.year < 1970 or (value.year == 9999 and offset is not None and offset.days < 0):
        raise ValueError(f"must be {TIME_RULE}")
    return value


_TIME_RE = re.compile(TIME_PATTERN)

ApiTime = Annotated[
    AwareDatetime,
    BeforeValidator(_time_text),
    AfterValidator(_time_in_range),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIME_PATTERN}),
]

# --- notify URLs -------------------------------------------------------------------------

# An absolute http(s) URL, RFC 3986 characters only (anything else percent-encoded), with a
# host in the one spelling callbacks connect to: a DNS name whose last label starts with a
# letter (so never an IPv4 address in another notation), four decimal octets, or [IPv6].
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    (
        f"({_H16}:){{7}}{_H16}",
        f"({_H16}:){{1,7}}:",
        f"({_H16}:){{1,6}}:{_H16}",
        f"({_H16}:){{1,5}}(:{_H16}){{1,2}}",
        f"({_H16}:){{1,4}}(:{_H16}){{1,3}}",
        f"({_H16}:){{1,3}}(:{_H16}){{1,4}}",
        f"({_H16}:){{1,2}}(:{_H16}){{1,5}}",
        f"{_H16}:(:{_H16}){{1,6}}",
        f":((:{_H16}){{1,7}}|:)",
        f"::([Ff]{{4}}:)?{_IPV4}",
    )
)
_NAME = r"([A-Za-z0-9_-]+\.)*[A-Za-z][A-Za-z0-9_-]*"
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[0-5]?[0-9]{1,4})"
_PCHAR = "([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
_USERINFO = "(([A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*@)?"
URL_PATTERN = (
    f"^[Hh][Tt][Tt][Pp][Ss]?://{_USERINFO}({_NAME}|{_IPV4}|\\[({_IPV6})\\])(:{_PORT})?"
    f"(/{_PCHAR}*)*(\\?({_PCHAR}|[/?])*)?(#({_PCHAR}|[/?])*)?$"
)
URL_RULE = (
    "an absolute http(s) URL of RFC 3986 characters (others percent-encoded) whose host is a"
    " DNS name (its last label starting with a letter), an IPv4 address as four decimal octets,"
    " or a bracketed IPv6 address"
)


def _deliverable(url: str) -> str:
    problem = url_problem(url)  # the pattern implies none; kept as the sender's own rule
    if problem:
        raise ValueError(problem.removeprefix("invalid notifyUrl: "))
    return url


_URL_RE = re.compile(URL_PATTERN)


def _url_text(value: Any) -> Any:
    if isinstance(value, str) and len(value) <= _URL_MAX and not _URL_RE.fullmatch(value):
        raise ValueError(f"must be {URL_RULE}")
    return value


_URL_MAX = 2048
HttpUrlText = Annotated[
    str,
    BeforeValidator(_url_text),
    StringConstraints(min_length=1, max_length=_URL_MAX),
    AfterValidator(_deliverable),
    WithJsonSchema(
        {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "maxLength": _URL_MAX,
            "pattern": URL_PATTERN,
        }
    ),
]
