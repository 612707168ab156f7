"""One-line structured log messages: ``event key=value ...`` (logfmt; values with spaces,
quotes or ``=`` are JSON-quoted), so a log line can be grepped and parsed."""

from __future__ import annotations

import json
from typing import Any


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def fields(event: str, **values: Any) -> str:
    """``event k1=v1 k2=v2`` with the values in the order given (``None`` values left out)."""
    parts = [event] + [f"{key}={_value(v)}" for key, v in values.items() if v is not None]
    return " ".join(parts)
