"""The body every event is sent as: built by one function, byte for byte what the compact
JSON of {"type", "timestamp", "data": {...data, "eventId"}} is."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from groupbuy_async.callbacks import events
from groupbuy_async.callbacks.events import EventType

WHEN = datetime(2026, 12, 3, 14, 0, 0, 123456, tzinfo=UTC)


def _reference(kind: str, event_id: str, data: dict[str, Any]) -> str:
    envelope = {"type": kind, "timestamp": WHEN.isoformat(), "data": {**data, "eventId": event_id}}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"teamId": "12345678", "outTradeNoList": ["a", "b"], "activityId": 7},
        {"orderId": "000000000001", "outTradeNo": 'q"uote\\back\nline\x01', "userId": "用户-ü"},
        {"nested": {"k": [1, 2.5, None, True]}, "refundType": "paid"},
    ],
)
def test_the_body_is_the_compact_json_of_the_envelope(data: dict[str, Any]) -> None:
    event_id = str(events.new_event_id())
    sent = events.body(EventType.ORDER_CLOSED, event_id, WHEN.isoformat(), data)
    assert sent == _reference("order.closed", event_id, data)
    assert events.parse_body(sent) == ("order.closed", {**data, "eventId": event_id})


def test_a_ping_has_the_same_shape() -> None:
    sent = events.ping_body("e1", WHEN, "m1", "ep1")
    assert sent == _reference("ping", "e1", {"merchantId": "m1", "endpointId": "ep1"})
