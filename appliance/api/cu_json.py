"""Results in the reference CU's JSON shape (what aoconnect and aos read from ``/result``,
``/results`` and ``/dry-run``).

The signed Result data keeps all six keys with ``null`` for none (DESIGN §4, what verifiers
check); AO's CU (servers/cu, ``mergeOutput``) instead defaults ``Messages``, ``Assignments`` and
``Spawns`` to ``[]`` and ``Output`` to ``""`` (a number becomes its string), and leaves ``Error``
and ``GasUsed`` out when there are none. The HTTP routes answer in that shape.
"""

from __future__ import annotations

from typing import Any

from appliance.compute import jsjson


def _output(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return jsjson.stringify(value).decode()  # JS String(number)
    return value


def result_json(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (the signed data's six keys) as the reference CU renders it."""
    shaped: dict[str, Any] = {
        "Messages": result.get("Messages") or [],
        "Assignments": result.get("Assignments") or [],
        "Spawns": result.get("Spawns") or [],
        "Output": _output(result.get("Output")),
    }
    for key in ("GasUsed", "Error"):
        if result.get(key) is not None:
            shaped[key] = result[key]
    return shaped
