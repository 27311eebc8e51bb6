"""JSON for the envelope: money as numbers with two decimals, times as ISO-8601."""

import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

_plain = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> str:
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def _encode(value: Any, out: list[str]) -> None:
    # json cannot emit a Decimal as a raw number, hence this small walker.
    if isinstance(value, Decimal):
        out.append(f"{value:.2f}")
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            out.append(f",{_plain(str(key))}:" if i else f"{_plain(str(key))}:")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, datetime):
        out.append(_plain(value.isoformat()))
    elif isinstance(value, UUID):
        out.append(_plain(str(value)))
    else:
        out.append(_plain(value))
