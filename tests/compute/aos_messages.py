"""Small, well-formed aos message streams shared by the compute tests."""

from __future__ import annotations

from typing import Any

PROCESS = "P" * 43
OWNER = "O" * 43
MODULE = "M" * 43
ENV: dict[str, Any] = {
    "Process": {"Id": PROCESS, "Owner": OWNER, "Tags": [{"name": "Name", "value": "test"}]},
    "Module": {"Id": MODULE, "Owner": OWNER, "Tags": []},
}


def message(n: int, tags: dict[str, str], data: str = "") -> dict[str, Any]:
    """The n-th message of the stream (n = 0 is the process itself)."""
    ident = PROCESS if n == 0 else f"{n:043d}"
    return {
        "Id": ident, "Owner": OWNER, "From": OWNER, "Target": PROCESS, "Module": MODULE,
        "Tags": [{"name": k, "value": v} for k, v in tags.items()], "Data": data,
        "Block-Height": str(1000 + n), "Timestamp": str(1_700_000_000_000 + n * 1000),
        "Cron": False,
    }


def eval_stream(count: int) -> list[dict[str, Any]]:
    """Spawn, then ``count`` Evals that build state, print, error and use the clock."""
    msgs = [message(0, {"Type": "Process"})]
    codes = [
        "counter = (counter or 0) + 1; return counter",
        "Handlers.add('ping', 'Ping', function(m) m.reply({Data = 'Pong'}) end)",
        "print(os.date()); return os.clock()",
        "error('rolled back: ' .. tostring(counter))",
        "return require('json').encode({counter = counter, r = math.random()})",
    ]
    for i in range(1, count + 1):
        msgs.append(message(i, {"Action": "Eval"}, codes[(i - 1) % len(codes)]))
    return msgs
