"""The events merchants receive: their types, and the body every one of them is sent as.

Bodies follow Standard Webhooks' recommendation: {"type", "timestamp", "data": {...}}; the
webhook-id header is the event id, also in data.eventId. Pure: no I/O here.
"""

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    TEAM_COMPLETED = "team.completed"
    TEAM_FAILED = "team.failed"
    ORDER_CLOSED = "order.closed"
    ORDER_REFUNDED = "order.refunded"
    ENDPOINT_DISABLED = "endpoint.disabled"  # written by callbacks/health.py, about no team


def new_event_id() -> uuid.UUID:
    """A new event id: a UUID version 7 (RFC 9562: 48 bits of Unix milliseconds, then random),
    so ids written one after another sort together and the unique indexes on event ids
    (event_event_id_key, notify_task_one_per_endpoint) take each new one on the pages of the
    last ones, not on a random page of a 10 M-entry index (issue 16)."""
    return new_event_ids(1)[0]


_VERSION_MASK = ~(0xF << 76) & ~(0b11 << 62)
_VERSION = 7 << 76 | 0b10 << 62  # version 7, RFC variant


def new_event_ids(count: int) -> list[uuid.UUID]:
    """`count` new event ids of this millisecond (one clock read, one read of randomness)."""
    millis = (time.time_ns() // 1_000_000) << 80
    random = os.urandom(10 * count)
    return [
        uuid.UUID(int=(millis | int.from_bytes(random[i : i + 10])) & _VERSION_MASK | _VERSION)
        for i in range(0, 10 * count, 10)
    ]


ORDER_EVENTS = frozenset({EventType.ORDER_CLOSED, EventType.ORDER_REFUNDED})


@dataclass(frozen=True)
class Event:
    """One outcome the merchant must act on; written in the state change's transaction.
    Unique per (type, team) for team events and per (type, order) for order events."""

    type: EventType
    team_id: str
    activity_id: int
    notify_url: str
    data: dict[str, Any] = field(default_factory=dict)
    order_id: str | None = None

    def __post_init__(self) -> None:
        if (self.type in ORDER_EVENTS) != (self.order_id is not None):
            raise ValueError(f"{self.type} events need an order_id exactly when about an order")


# One encoder for every body (json.dumps with options would build one per call): compact,
# non-ASCII as it is.
encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def body(event_type: str, event_id: str, timestamp: str, data: dict[str, Any]) -> str:
    """The exact bytes sent on every attempt (stored once, so retries are byte-identical):
    {"type","timestamp","data"} with the event id last in data. `timestamp` is ISO-8601
    (datetime.isoformat()), made once for the events written together. outbox.body_sql makes
    the same bytes in SQL (tests/integration/test_sql_bodies.py holds them equal)."""
    fields = encode(data)[:-1]  # "{" and data's members, the event id follows them
    comma = "," if data else ""
    return (
        f'{{"type":{encode(event_type)},"timestamp":"{timestamp}","data":'
        f'{fields}{comma}"eventId":{encode(event_id)}}}}}'
    )


def parse_body(stored: str) -> tuple[str, dict[str, Any]]:
    """An event's type and the data sent for it, from the body stored for it. Bodies
    written before events were typed are a flat team.completed data object."""
    parsed = json.loads(stored)
    if not isinstance(parsed, dict):
        raise ValueError("a stored event body is a JSON object")
    if isinstance(parsed.get("data"), dict) and isinstance(parsed.get("type"), str):
        return parsed["type"], parsed["data"]
    return str(EventType.TEAM_COMPLETED), parsed


def ping_body(event_id: str, created: datetime, merchant_id: str, endpoint_id: str) -> str:
    """A `ping` (an endpoint's test, never stored): the body every event has."""
    data = {"merchantId": merchant_id, "endpointId": endpoint_id}
    return body("ping", event_id, created.isoformat(), data)
