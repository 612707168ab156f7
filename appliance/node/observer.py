"""What the node reports as it works, for metrics; the node runs the same without an observer.

Every hook is called from the node's own threads (HTTP/gRPC worker threads for ingest and
attestation, actor threads for evaluation and checkpoints) and must be cheap and never raise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

ProgressListener = Callable[[str, int], None]
"""``listener(process_id, slot)``: results of ``process_id`` up to ``slot`` were stored, or it
stopped evaluating."""


class ProgressListeners:
    """The progress listeners registered with a shard (front-ends wake their waiting readers
    with them, holding no thread); a failing listener is logged, never raised."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[ProgressListener] = []

    def add(self, listener: ProgressListener) -> None:
        """Call ``listener`` from now on."""
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: ProgressListener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            self._listeners.remove(listener)

    def notify(self, process_id: str, slot: int) -> None:
        """Call every listener."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(process_id, slot)
            except Exception:
                log.exception("progress listener failed")


class NodeObserver:
    """Events the node reports; ids never cross this interface, only kinds and sizes.

    Every hook does nothing here: this class is the observer of a node without metrics, and
    the base of those that count.
    """

    def item_accepted(self, kind: str) -> None:
        """An item of type ``kind`` (Module, Process or Message) was stored durably."""

    def item_rejected(self, error: BaseException) -> None:
        """``ingest`` refused an item with ``error``; nothing was stored."""

    def batch_evaluated(self, messages: int, seconds: float) -> None:
        """A worker evaluated a batch of ``messages`` messages in ``seconds`` (round trip)."""

    def results_committed(self, results: Sequence[dict[str, Any]]) -> None:
        """Result items for these result objects were signed and stored."""

    def outbox_refused(self, reason: str, count: int) -> None:
        """``count`` outgoing messages of one result were not sent (``reason``: ``per_message``
        or ``crank_window``); the result's Error says so."""

    def commit_deferred(self) -> None:
        """An evaluated batch could not be stored (the disk is full); it is retried."""

    def divergence(self) -> None:
        """A re-evaluation produced a different result than the one recorded for that slot."""

    def worker_crashed(self) -> None:
        """An evaluation worker process died and was restarted."""

    def shard_restarted(self) -> None:
        """A shard process died and the front started it again."""

    def process_moved(self) -> None:
        """A process moved off a worker another process's evaluation held, to be reopened
        from its checkpoint on an idle or extra worker."""

    def checkpointed(self, raw_bytes: int, file_bytes: int, seconds: float) -> None:
        """A checkpoint of ``raw_bytes`` of memory was written as ``file_bytes`` on disk."""

    def checkpoint_failed(self) -> None:
        """Writing or recording a checkpoint raised."""

    def instance_evicted(self, nbytes: int, checkpointed: bool) -> None:
        """An idle instance of ``nbytes`` was closed to stay within the memory budget
        (``checkpointed``: it had evaluated past its newest checkpoint, so one was written)."""

    def instance_restored(self, nbytes: int, seconds: float) -> None:
        """An evicted process was reopened from its checkpoint in ``seconds`` (load and restore)."""

    def attested(self, kind: str, ok: bool) -> None:
        """An attestation of ``kind`` (standing or fresh) was made (``ok``) or failed."""

    def evidence_verified(self, whose: str, step: str, ok: bool) -> None:
        """Evidence (``whose``: ``self`` for the node's own) passed up to ``step`` or failed at
        it (a step id such as ``TDX-14``, or ``collateral`` / ``malformed``)."""
