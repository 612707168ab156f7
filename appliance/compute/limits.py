"""Per-process evaluation limits, in one frozen place."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from appliance.errors import ConfigError

WASM_PAGE = 65536
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$", re.IGNORECASE)
_UNITS = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3, "tb": 1000**4, "tib": 1024**4,
}


@dataclass(frozen=True)
class ComputeLimits:
    """Limits applied to every message a process evaluates.

    ``memory_bytes`` caps linear memory (AO ``Memory-Limit``); ``gas`` is AO's ``Compute-Limit``
    in AO's gas (the loader's default when a process sets none), enforced only for metered
    modules, as AO's CU does; ``fuel`` is the operator's own safety limit on wasm work per
    message (wasmtime fuel units), enforced for every module; ``wall_clock_seconds`` caps
    real time per message; ``max_response_bytes`` caps the JSON a module may return.
    ``rollback_window`` is how many successful messages may be replayed to undo a failed one:
    the memory is copied once per window (for aos, ~110 MB every 64 messages cost 8% of engine
    throughput), and since a rollback starts a new window, replays average at most one per
    message however large the window; what it bounds is one failed message's latency.
    """

    memory_bytes: int = 1024**3
    fuel: int = 9_000_000_000_000
    gas: int = 9_000_000_000_000_000
    wall_clock_seconds: float = 60.0
    max_response_bytes: int = 64 * 1024**2
    rollback_window: int = 256

    def __post_init__(self) -> None:
        if self.memory_bytes < WASM_PAGE:
            raise ConfigError(f"memory limit {self.memory_bytes} is below one wasm page")
        if (self.fuel <= 0 or self.gas < 0 or self.wall_clock_seconds <= 0
                or self.max_response_bytes <= 0):
            raise ConfigError("compute, wall-clock and response limits must be positive")
        if self.rollback_window < 1:
            raise ConfigError("rollback_window must be at least 1")


def parse_size(text: str) -> int:
    """Parse an AO size such as ``"1-gb"``, ``"512 MiB"`` or ``"17179869184"`` into bytes."""
    match = _SIZE.match(text.replace("-", ""))
    if not match:
        raise ConfigError(f"not a size: {text!r}")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _UNITS[unit]


def requested_limits(tags: list[dict[str, str]]) -> dict[str, int]:
    """What AO ``Memory-Limit`` / ``Compute-Limit`` tags (module or process) ask for, as
    ``ComputeLimits`` field values; a later tag of the same name wins (process after module)."""
    values = {t.get("name"): t.get("value") for t in tags if isinstance(t, dict)}
    memory, compute = values.get("Memory-Limit"), values.get("Compute-Limit")
    asked: dict[str, int] = {}
    if isinstance(memory, str):
        asked["memory_bytes"] = parse_size(memory)
    if isinstance(compute, str):
        if not compute.strip().isdigit():
            raise ConfigError(f"Compute-Limit must be a whole number, got {compute!r}")
        if int(compute):  # 0 asks for nothing: the loader's `limit || default`
            asked["gas"] = int(compute)
    return asked


def limits_from_tags(tags: list[dict[str, str]], base: ComputeLimits) -> ComputeLimits:
    """Apply AO ``Memory-Limit`` / ``Compute-Limit`` tags to ``base`` as given (``run`` and proof
    replay evaluate what the tags say)."""
    asked = requested_limits(tags)
    return replace(base, **asked) if asked else base


TAG_OF = {"memory_bytes": "Memory-Limit", "gas": "Compute-Limit"}


def above_maximum(tags: list[dict[str, str]], maximum: ComputeLimits) -> str | None:
    """Why the tags ask for more than ``maximum`` (naming the tag, the value and the maximum), or
    ``None`` when they stay within it."""
    for field, value in requested_limits(tags).items():
        cap = getattr(maximum, field)
        if value > cap:
            return f"{TAG_OF[field]} {value} exceeds this node's maximum of {cap}"
    return None


def capped_limits(tags: list[dict[str, str]], maximum: ComputeLimits) -> ComputeLimits:
    """The node's limits for a process: the operator's are caps that tags may only lower."""
    asked = requested_limits(tags)
    return replace(maximum, **{f: min(v, getattr(maximum, f)) for f, v in asked.items()})
