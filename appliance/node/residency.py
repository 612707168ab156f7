"""Which process instances are resident in the evaluation workers, what they cost, and which
to evict when they cost more than the memory budget (least recently used first).

The book only decides; the shard applies a decision (checkpoint, close in the worker) under the
actor's lock and tells the book what happened. Dry-run copies are booked too, under their own
kind, and go first: they are rebuilt from an image without replaying anything.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    """What a resident instance is."""

    PROCESS = "process"
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class Tally:
    """Resident and evicted instances and their bytes, as the metrics export them."""

    resident: int
    resident_bytes: int
    evicted: int
    evicted_bytes: int
    dry_run_bytes: int


class Residency:
    """Resident instances in least-recently-used order, with their last reported bytes.

    Thread-safe (its own lock, never held while calling out). Bytes are what the worker
    reported after an open or a batch: an instance growing mid-batch is counted when the batch
    ends.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._resident: OrderedDict[tuple[Kind, str], int] = OrderedDict()
        self._evicted: dict[str, int] = {}
        self._bytes = dict.fromkeys(Kind, 0)
        self._processes = 0
        self._evicted_bytes = 0

    def used(self, kind: Kind, process_id: str, nbytes: int) -> None:
        """``process_id``'s instance of ``kind`` is resident with ``nbytes`` and was just used."""
        key = (kind, process_id)
        with self._lock:
            before = self._resident.get(key)
            if before is None and kind is Kind.PROCESS:
                self._processes += 1
                self._evicted_bytes -= self._evicted.pop(process_id, 0)
            self._bytes[kind] += nbytes - (before or 0)
            self._resident[key] = nbytes
            self._resident.move_to_end(key)

    def gone(self, kind: Kind, process_id: str, *, evicted: bool) -> int:
        """The instance is closed (``evicted``: to be restored on demand); its last bytes."""
        with self._lock:
            nbytes = self._resident.pop((kind, process_id), None)
            if nbytes is None:
                return 0
            self._bytes[kind] -= nbytes
            if kind is Kind.PROCESS:
                self._processes -= 1
                if evicted:
                    self._evicted[process_id] = nbytes
                    self._evicted_bytes += nbytes
            return nbytes

    def over_budget(self) -> int:
        """Bytes resident beyond the budget (0 when within it)."""
        with self._lock:
            return max(0, sum(self._bytes.values()) - self.budget_bytes)

    def victims(self) -> list[tuple[Kind, str]]:
        """Instances to try evicting, in order, while over budget: dry-run copies least recently
        used first, then processes least recently used first, never the most recently used
        process (an instance larger than the whole budget still runs; it alone is resident)."""
        with self._lock:
            keys = list(self._resident)
        processes = [k for k in keys if k[0] is Kind.PROCESS]
        return [k for k in keys if k[0] is Kind.DRY_RUN] + processes[:-1]

    def tally(self) -> Tally:
        """The counts and bytes the metrics export."""
        with self._lock:
            return Tally(self._processes, self._bytes[Kind.PROCESS], len(self._evicted),
                         self._evicted_bytes, self._bytes[Kind.DRY_RUN])
