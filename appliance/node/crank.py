"""Outbox limits: what keeps a process that messages itself (or is cranked by other processes)
from growing its schedule without bound.

Two per-process limits, decided in pure functions here and applied by the node before a result
is signed: at most ``max_outbox_messages`` Messages + Spawns per evaluated message, and at most
``max_crank_messages`` self-generated ones per ``crank_window_seconds`` (sent to the process
itself, or sent while evaluating a message that was itself pushed by a process). The excess is
not sent, and the sending result says so in its ``Error`` (never a silent drop); the memory is not
rolled back, since the module's evaluation succeeded. A verifier replaying the schedule accepts a
result that differs from its evaluation only by such a truncated outbox (:func:`same_evaluation`).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from appliance.node.results import result_data

OUTBOX_LIMIT_ERROR = "outbox limit exceeded"


@dataclass
class CrankWindow:
    """The times of one process's recent self-generated sends (a sliding window)."""

    sent: deque[float] = field(default_factory=deque)

    def room(self, now: float, window: float, limit: int) -> int:
        """How many more self-generated messages fit in the window ending at ``now``."""
        while self.sent and self.sent[0] <= now - window:
            self.sent.popleft()
        return max(0, limit - len(self.sent))

    def record(self, now: float, count: int) -> None:
        """Remember ``count`` self-generated messages sent at ``now``."""
        self.sent.extend([now] * count)


@dataclass(frozen=True)
class Limited:
    """A result after the outbox limits: the result to sign and what was refused."""

    result: dict[str, Any]
    refused: int
    reason: str  # "" when nothing was refused, else "per_message" or "crank_window"
    counted: int  # self-generated messages that were sent (for the window)


def _entries(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def limit_outbox(result: dict[str, Any], process_id: str, cranked: bool, *, per_message: int,
                 room: int) -> Limited:
    """Keep the outbox of ``result`` within ``per_message`` entries and ``room`` self-generated
    ones (every entry when ``cranked``, else those targeting ``process_id``), in order."""
    outgoing = [("Messages", m) for m in _entries(result.get("Messages"))]
    outgoing += [("Spawns", s) for s in _entries(result.get("Spawns"))]
    kept: list[tuple[str, Any]] = []
    counted = 0
    reason = ""
    for key, entry in outgoing:
        own = cranked or (key == "Messages" and isinstance(entry, dict)
                          and entry.get("Target") == process_id)
        if len(kept) >= per_message:
            reason = reason or "per_message"
            break
        if own and counted >= room:
            reason = reason or "crank_window"
            break
        kept.append((key, entry))
        counted += bool(own)
    refused = len(outgoing) - len(kept)
    if not refused:
        return Limited(result, 0, "", counted)
    why = (f"at most {per_message} per message" if reason == "per_message" else
           "the process's self-generated messages reached node.max_crank_messages per "
           "node.crank_window_seconds")
    error = f"{OUTBOX_LIMIT_ERROR}: {refused} of {len(outgoing)} outgoing messages not sent ({why})"
    if result.get("Error"):
        error += f"; the module's Error: {result['Error']}"
    limited = dict(result, Error=error,
                   Messages=[e for k, e in kept if k == "Messages"],
                   Spawns=[e for k, e in kept if k == "Spawns"])
    return Limited(limited, refused, reason, counted)


def same_evaluation(recorded: bytes, evaluated: dict[str, Any]) -> bool:
    """Whether a recorded result's data is ``evaluated``, or ``evaluated`` with its outbox cut
    by :func:`limit_outbox` (its first entries kept, the Error saying how many were not sent)."""
    if recorded == result_data(evaluated):
        return True
    try:
        stored = json.loads(recorded)
    except ValueError:
        return False
    error = stored.get("Error") if isinstance(stored, dict) else None
    if not (isinstance(error, str) and error.startswith(OUTBOX_LIMIT_ERROR)):
        return False
    for key in ("Messages", "Spawns"):
        kept = _entries(stored.get(key))
        if kept != _entries(evaluated.get(key))[:len(kept)]:
            return False
    rest = {k: stored.get(k) for k in ("Output", "Assignments", "GasUsed")}
    return rest == {k: json.loads(result_data(evaluated)).get(k) for k in rest}
