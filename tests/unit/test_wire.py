"""The types whose JSON schema states the whole server rule."""

import pytest
from pydantic import TypeAdapter, ValidationError

from groupbuy_async.http.wire import OrderStatusValue


def test_a_status_is_an_integer_of_its_enum() -> None:
    status = TypeAdapter(OrderStatusValue)
    assert status.validate_python(3) == 3
    with pytest.raises(ValidationError, match="must be one of 0, 1, 2, 3"):
        status.validate_python(4)
    schema = status.json_schema()
    assert (schema["type"], schema["enum"]) == ("integer", [0, 1, 2, 3])
    assert schema["x-enum-varnames"] == ["LOCKED", "PAID", "CLOSED", "REFUNDED"]
