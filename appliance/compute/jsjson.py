"""JSON text exactly as JavaScript's ``JSON.stringify`` writes it (what a guest is handed)."""

from __future__ import annotations

import json
import re
from typing import Any

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _integral_floats(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats(v) for v in value]
    return value


def stringify(value: Any) -> bytes:
    """UTF-8 bytes of ``JSON.stringify(value)`` (integral floats as integers, no spaces)."""
    return stringify_floatless(_integral_floats(value))


def stringify_floatless(value: Any) -> bytes:
    """:func:`stringify` for a value known to hold no floats (skips the float pass)."""
    text = _encoder.encode(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        escaped = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        return escaped.encode("utf-8")
