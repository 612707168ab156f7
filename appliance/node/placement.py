"""Which shard owns a process: the node's "process id → owner" routing.

A new process goes to the shard its id hashes to; a process already stored keeps the shard that
holds it (the front learns those from the shards at start), so a changed shard count never moves
a process. The same idea routes between nodes (an owner is then a node, see DESIGN §7).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable


def hashed_owner(process_id: str, count: int) -> int:
    """The shard a new process with ``process_id`` is placed on, of ``count`` shards."""
    digest = hashlib.sha256(process_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


class Placement:
    """Process id → owning shard index, for ``count`` shards."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("a node needs at least one shard")
        self.count = count
        self._known: dict[str, int] = {}
        self._lock = threading.Lock()

    def learn(self, owner: int, process_ids: Iterable[str]) -> None:
        """Record that shard ``owner`` holds ``process_ids``."""
        with self._lock:
            for pid in process_ids:
                self._known[pid] = owner

    def holder(self, process_id: str) -> int | None:
        """The shard that holds ``process_id``, None when no shard does (as far as the front
        learned: every process stored at start, ingested, pushed or spawned since)."""
        return self._known.get(process_id)

    def owner(self, process_id: str) -> int:
        """The shard that holds ``process_id``, or the one a new process with that id goes to."""
        known = self._known.get(process_id)
        return hashed_owner(process_id, self.count) if known is None else known
