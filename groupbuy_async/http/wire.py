"""Types of the API whose JSON schema states the whole rule the server enforces, so that a
client generated from OpenAPI accepts exactly what the server accepts: status integers as enums."""

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from ..callbacks.rules import NotifyStatus
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
