"""The node façade every front-end calls (HTTP, gRPC, metrics, proof export).

A node is one or more shards, each owning a disjoint set of processes end to end (its own store,
schedule, workers: see :mod:`appliance.node.shard`). :class:`Node` routes each call about a
process to the shard that owns it (:mod:`appliance.node.placement`) and fans out the reads that
span processes; it does no per-message work beyond that routing. Front-ends never reach a shard
or a store on their own.
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from appliance.ao import items
from appliance.errors import ApplianceError, BadRequest, NotFound, NotHosted, TooLarge
from appliance.network.courier import RouteFn
from appliance.node.db.queries import ProcessRow, ResultRow
from appliance.node.guest import ScheduledSlot
from appliance.node.identity import NodeIdentity
from appliance.node.observer import NodeObserver, ProgressListener
from appliance.node.placement import Placement
from appliance.node.remote_shard import RemoteShard
from appliance.node.residency import Tally
from appliance.node.routing import PeerRouter, SoleShard
from appliance.node.settings import NodeSettings
from appliance.node.shard import ALL_SLOTS, Receipt, ScheduledEntry, Shard
from appliance.node.standing import StandingAttestation
from attestation.evidence import EvidenceProvider

PushGate = Callable[[items.Item], None]
"""``gate(item)`` raises to refuse a pushed item before it is stored (see :meth:`Node.ingest`)."""
_FROM_PROCESS = b"From-Process"

# Cursors of reads that merge shards carry the shard in their low digits: cursor = row × this +
# shard index (a node has fewer shards than this).
MAX_SHARDS = 1024


def local_shards(settings: NodeSettings, identity: NodeIdentity, provider: EvidenceProvider,
                 config_digest: bytes, count: int, *,
                 observer: NodeObserver | None = None) -> list[Shard]:
    """``count`` shards running in this process (tests and embedded use); they start
    evaluating when a :class:`Node` takes them."""
    return [Shard(settings.for_shard(k, count), identity, provider, config_digest,
                  observer=observer, resume=False) for k in range(count)]


class LocalRouter:
    """The :class:`~appliance.node.routing.ShardRouter` of shard ``index`` of ``node`` when the
    shards share one process: a push is a call on the owner."""

    def __init__(self, node: Node, index: int) -> None:
        self._node = node
        self._index = index

    def owns(self, process_id: str) -> bool:
        """True when this shard holds ``process_id`` or no shard does."""
        holder = self._node.placement.holder(process_id)
        return holder is None or holder == self._index

    def places(self, process_id: str) -> bool:
        """True when a new process ``process_id`` goes on this shard."""
        return self._node.placement.owner(process_id) == self._index

    def placed(self, process_id: str) -> None:
        """Route ``process_id`` to this shard from now on."""
        self._node.placement.learn(self._index, [process_id])

    def push(self, target: str, raw: bytes, kind: str, push_depth: int) -> None:
        """Hand the item to the shard owning ``target``."""
        index = self._node.placement.owner(target)
        if kind == "spawn":  # before it exists: a message to it must not find no holder
            self._node.placement.learn(index, [target])
        self._node.shards[index].accept(target, raw, kind, push_depth)

    def module(self, module_id: str) -> bytes | None:
        """The Module item from the first shard that stores it, else from a peer (checked)."""
        for shard in self._node.shards:
            raw = shard.module_raw(module_id)
            if raw is not None:
                return raw
        return self._node.peer_module(module_id)


OUTBOX_FAILURES_SHOWN = 20


class Node:
    """One ao-appliance node: SU + CU + MU for the processes it hosts, over its shards.

    Without ``shards`` the node is one shard in this process on ``settings.data_dir``; given
    ``shards`` (not yet started: :func:`local_shards` makes them in this process,
    :func:`~appliance.node.remote_shard.process_shards` each in a process of its own) are
    started with a router reaching each other.
    """

    def __init__(self, settings: NodeSettings, identity: NodeIdentity,
                 provider: EvidenceProvider, config_digest: bytes, *,
                 observer: NodeObserver | None = None,
                 shards: Sequence[Shard | RemoteShard] | None = None) -> None:
        self.settings = settings
        self.identity = identity
        self.provider = provider
        self.config_digest = config_digest
        self.observer: NodeObserver = observer or NodeObserver()
        self.shards: tuple[Shard | RemoteShard, ...] = tuple(shards) if shards is not None else (
            Shard(settings, identity, provider, config_digest, observer=self.observer),)
        if len(self.shards) > MAX_SHARDS:
            raise ValueError(f"a node runs at most {MAX_SHARDS} shards")
        self.placement = Placement(len(self.shards))
        self._remote = any(isinstance(shard, RemoteShard) for shard in self.shards)
        self.push_gate: PushGate | None = None
        """Set by ``serve`` (:class:`~appliance.network.trust.PeerTrust`): asked about every
        ingested item carrying ``From-Process``; None admits all (tests, embedded use)."""
        for index, shard in enumerate(self.shards):
            self.placement.learn(index, shard.process_ids())
        self.peers: PeerRouter | None = None
        """Set by a serving node with peers: items for their processes are forwarded there."""
        self._progress = threading.Condition()
        for shard in self.shards:
            shard.add_progress_listener(self._progressed)
        if shards is not None:
            for index, shard in enumerate(self.shards):
                shard.start(LocalRouter(self, index) if len(self.shards) > 1
                            else SoleShard(self.peer_module))
        else:  # the one shard made here is running already: it only needs the peers' modules
            self.local().router = SoleShard(self.peer_module)

    def connect_peers(self, route: RouteFn) -> None:
        """Have every shard's courier push ``pending`` outbox items where ``route`` says (the
        peer directory's :meth:`~appliance.network.peers.PeerDirectory.route`)."""
        for shard in self.shards:
            shard.connect_peers(route)

    # --- routing ---------------------------------------------------------------------------

    def peer_module(self, module_id: str) -> bytes | None:
        """The Module item ``module_id`` from a peer (checked), or None (no peers, none has it)."""
        return self.peers.module(module_id) if self.peers is not None else None

    def owner(self, process_id: str) -> Shard | RemoteShard:
        """The shard that owns ``process_id`` (or would, for a new process)."""
        return self.shards[self.placement.owner(process_id)]

    def local(self, index: int = 0) -> Shard:
        """Shard ``index`` itself when it runs in this process (tests and benches look
        inside it)."""
        shard = self.shards[index]
        if not isinstance(shard, Shard):
            raise TypeError(f"shard {index} runs in a process of its own")
        return shard

    @property
    def home(self) -> Shard | RemoteShard:
        """The shard that answers for the node as a whole (attestation, location record)."""
        return self.shards[0]

    # --- lifecycle and attestation ----------------------------------------------------------

    @property
    def standing(self) -> StandingAttestation:
        """The home shard's standing attestation."""
        return self.home.standing

    @property
    def attestation_id(self) -> str:
        """The standing attestation new Results of the home shard name."""
        return self.home.attestation_id

    def refresh_attestation(self) -> StandingAttestation:
        """Make a new standing attestation on every shard; returns the home shard's."""
        for shard in self.shards[1:]:
            shard.refresh_attestation()
        return self.home.refresh_attestation()

    def attest(self, nonce: bytes, *, keep: bool = True) -> items.Item:
        """A fresh Attestation item binding the node's key for ``nonce``."""
        return self.home.attest(nonce, keep=keep)

    def publish_location(self, url: str) -> str:
        """Sign and store the node's ``Scheduler-Location`` record pointing at ``url``."""
        return self.home.publish_location(url)

    def close(self) -> None:
        """Finish in-flight work and stop every shard."""
        for shard in self.shards:
            shard.close()

    def add_progress_listener(self, listener: ProgressListener) -> None:
        """Call ``listener(process_id, slot)`` when results are stored (see Shard)."""
        for shard in self.shards:
            shard.add_progress_listener(listener)

    def remove_progress_listener(self, listener: ProgressListener) -> None:
        """Stop calling ``listener``."""
        for shard in self.shards:
            shard.remove_progress_listener(listener)

    def _progressed(self, _process_id: str, _slot: int) -> None:
        with self._progress:
            self._progress.notify_all()

    # --- ingest ------------------------------------------------------------------------------

    def hosts(self, process_id: str) -> bool:
        """True when a shard of this node holds ``process_id`` (asked: the placement also
        remembers guesses for Process items a shard then refused)."""
        try:
            self.owner(process_id).process_info(process_id)
        except NotFound:
            return False
        return True

    def ingest(self, raw: bytes, *, forward: bool = True) -> Receipt:
        """Take one client data item: schedule it here (:meth:`ingest_here`), or, with
        :attr:`peers` and ``forward``, forward an item for a process a peer hosts there and give
        its receipt. A Process whose Module only a peer stores gets the module from that peer
        first."""
        try:
            return self.ingest_here(raw)
        except (NotFound, NotHosted) as exc:
            return self.ingest_refused(raw, exc, forward=forward)

    def ingest_refused(self, raw: bytes, refusal: NotFound | NotHosted, *,
                       forward: bool = True) -> Receipt:
        """The rest of :meth:`ingest` once :meth:`ingest_here` (or :meth:`submit_ingest`)
        refused ``raw`` with ``refusal``: forward it to a peer, or fetch the Process's Module
        from a peer and ingest both; else raise ``refusal``."""
        if self.peers is None:
            raise refusal
        if isinstance(refusal, NotHosted):
            if not forward:
                raise refusal
            return self.peers.forward(raw, refusal)
        module_id = _missing_module(raw)
        if module_id is None:
            if not forward:
                raise refusal
            return self.peers.forward(raw, refusal)
        module = self.peers.module(module_id)
        if module is None:
            raise refusal
        self.ingest_here(module)
        return self.ingest_here(raw)

    def submit_ingest(self, raw: bytes) -> Future[Receipt] | None:
        """:meth:`ingest_here` without waiting, when the shard owning the item runs in a process
        of its own: the future of its Receipt (or of the shard's refusal). None when it must go
        through :meth:`ingest` on a thread instead: its shard runs in this process (ingest
        blocks on the store), or it is a Module (for every shard). A malformed item or a refused
        push raises here."""
        if not self._remote:
            return None
        shard = self._route(raw)
        if not isinstance(shard, RemoteShard):
            return None
        future: Future[Receipt] = shard.submit("ingest", raw)
        return future

    def assign(self, process_id: str, message_id: str, raw: bytes) -> Receipt:
        """AO's SU assign call (what a peer's courier sends for an outbox Assignment): schedule
        the message ``raw`` (which must verify and be ``message_id``) on ``process_id``, a
        process this node hosts, once (a repeat answers the slot it already has). The owning
        shard verifies the signature."""
        try:
            item = items.parse_unverified(raw, self.settings.max_item_bytes)
        except ApplianceError as exc:
            self.observer.item_rejected(exc)
            raise
        if item.id != message_id:
            raise BadRequest(f"the body is item {item.id}, not the message {message_id} to "
                             f"assign")
        shard = self.owner(process_id)
        shard.accept(process_id, raw, "assignment", 1)
        _, assignment = shard.scheduled(process_id, message_id)
        nonce = items.first_tag(assignment, "Nonce")
        return Receipt(message_id, "Assignment", process_id,
                       int(nonce) if nonce is not None and nonce.isdigit() else None)

    def ingest_here(self, raw: bytes) -> Receipt:
        """Route one client data item to the shard that owns its process; a Module goes to
        every shard (any of them may host a process of it). The shard verifies it. An item
        carrying ``From-Process`` is first put to :attr:`push_gate` (a cached verdict lookup)."""
        shard = self._route(raw)
        if shard is not None:
            return shard.ingest(raw)
        receipt = self.home.ingest(raw)
        for other in self.shards[1:]:
            other.ingest(raw)
        return receipt

    def _route(self, raw: bytes) -> Shard | RemoteShard | None:
        """The shard that takes the client item ``raw`` (None: a Module, for every shard of
        several), once :attr:`push_gate` admitted it."""
        gate = self.push_gate
        if gate is not None and _FROM_PROCESS in raw:
            self._gate(raw, gate)
        if len(self.shards) == 1:
            return self.home
        try:
            if len(raw) > self.settings.max_item_bytes:
                raise TooLarge(f"item of {len(raw)} bytes exceeds the limit of "
                               f"{self.settings.max_item_bytes}")
            item = items.parse_unverified(raw, self.settings.max_item_bytes)
        except ApplianceError as exc:
            self.observer.item_rejected(exc)
            raise
        kind = items.first_tag(item, "Type")
        if kind == "Module":
            return None
        if kind == "Process":
            index = self.placement.owner(item.id)
            self.placement.learn(index, [item.id])  # a wrong guess (refused item) is harmless:
            return self.shards[index]  # that shard refuses messages to it
        return self.owner(item.target) if item.target else self.home

    def _gate(self, raw: bytes, gate: PushGate) -> None:
        try:
            item = items.parse_unverified(raw, self.settings.max_item_bytes)
        except ApplianceError:
            return  # malformed: the shard refuses it with the precise reason
        try:
            gate(item)
        except ApplianceError as exc:
            self.observer.item_rejected(exc)
            raise

    # --- reads about one process -------------------------------------------------------------

    def result_now(self, process_id: str, message_id: str) -> tuple[int, dict[str, Any] | None]:
        """(slot, result JSON or None while not computed); never waits."""
        return self.owner(process_id).result_now(process_id, message_id)

    def submit_result_now(self, process_id: str,
                          message_id: str) -> Future[tuple[int, dict[str, Any] | None]] | None:
        """:meth:`result_now` without waiting, when the owning shard runs in a process of its
        own: the future of its answer (None: call :meth:`result_now` on a thread)."""
        shard = self.owner(process_id)
        if not isinstance(shard, RemoteShard):
            return None
        future: Future[tuple[int, dict[str, Any] | None]] = shard.submit(
            "result_now", process_id, message_id)
        return future

    def result(self, process_id: str, message_id: str, wait: bool = True) -> dict[str, Any]:
        """The result JSON of ``message_id``, waiting up to ``result_wait_seconds``."""
        deadline = time.monotonic() + (self.settings.result_wait_seconds if wait else 0)
        while True:
            _, value = self.result_now(process_id, message_id)
            if value is not None:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotFound(f"result for {message_id} is not computed yet")
            with self._progress:
                self._progress.wait(min(remaining, 0.5))

    def result_item(self, process_id: str, message_id: str) -> bytes:
        """The raw signed Result item of ``message_id`` (waits like :meth:`result`)."""
        self.result(process_id, message_id)
        return self.owner(process_id).result_row(process_id, message_id).raw

    def result_row(self, process_id: str, message_id: str) -> ResultRow:
        """The stored result of ``message_id`` with its signed item (NotFound before it is)."""
        return self.owner(process_id).result_row(process_id, message_id)

    def results_from(self, process_id: str, from_slot: int, limit: int) -> list[ResultRow]:
        """Up to ``limit`` stored results of a process from ``from_slot`` on."""
        return self.owner(process_id).results_from(process_id, from_slot, limit)

    def schedule_items(self, process_id: str, first: int,
                       last: int) -> list[tuple[int, bytes, bytes]]:
        """(slot, raw message, raw assignment) of the slots ``first..last``."""
        return self.owner(process_id).schedule_items(process_id, first, last)

    def result_items(self, process_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """(slot, raw signed Result) of the stored results in slots ``first..last``."""
        return self.owner(process_id).result_items(process_id, first, last)

    def cron_results_between(self, process_id: str, first_slot: int,
                             last_slot: int) -> list[bytes]:
        """Raw cron Result items after slots ``first_slot..last_slot``, in chain order."""
        return self.owner(process_id).cron_results_between(process_id, first_slot, last_slot)

    def dry_run(self, process_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """Evaluate ``message`` on the process's latest state, keeping nothing."""
        return self.owner(process_id).dry_run(process_id, message)

    def scheduled(self, process_id: str, message_id: str) -> tuple[items.Item, items.Item]:
        """(message item, assignment item) of a scheduled message."""
        return self.owner(process_id).scheduled(process_id, message_id)

    def schedule_page(self, process_id: str, *, from_ms: int | None = None,
                      to_ms: int | None = None, from_slot: int | None = None,
                      to_slot: int | None = None,
                      limit: int = 100) -> tuple[list[ScheduledEntry], bool]:
        """A page of the schedule by slot (``from`` exclusive, ``to`` inclusive)."""
        return self.owner(process_id).schedule_page(
            process_id, from_ms=from_ms, to_ms=to_ms, from_slot=from_slot, to_slot=to_slot,
            limit=limit)

    def process_info(self, process_id: str) -> tuple[items.Item, ScheduledSlot, items.Item]:
        """(process item, its slot 0, slot-0 assignment)."""
        return self.owner(process_id).process_info(process_id)

    def results_page(self, process_id: str, *, after_slot: int | None, before_slot: int | None,
                     descending: bool, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Stored results as (slot, result JSON) by slot."""
        return self.owner(process_id).results_page(
            process_id, after_slot=after_slot, before_slot=before_slot, descending=descending,
            limit=limit)

    def cron_page(self, process_id: str, *, after: tuple[int, str, str] | None,
                  since_ms: int | None, upto: tuple[int, str | None, str | None] | None,
                  limit: int) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], bool]:
        """Cron results in evaluation order (see :meth:`Shard.cron_page`)."""
        return self.owner(process_id).cron_page(process_id, after=after, since_ms=since_ms,
                                                upto=upto, limit=limit)

    def tick_crons(self, process_id: str, wait: bool = True) -> None:
        """Evaluate ``process_id``'s cron messages up to now."""
        self.owner(process_id).tick_crons(process_id, wait)

    def state(self, process_id: str) -> tuple[int, bytes]:
        """(slot, raw memory) from the process's newest checkpoint."""
        return self.owner(process_id).state(process_id)

    def checkpoint_now(self, process_id: str) -> int:
        """Checkpoint a process at its latest evaluated slot; returns that slot."""
        return self.owner(process_id).checkpoint_now(process_id)

    def checkpoint_digest(self, process_id: str, slot: int) -> tuple[str, int]:
        """(memory SHA-256 hex, memory size) of a process's checkpoint at ``slot``."""
        return self.owner(process_id).checkpoint_digest(process_id, slot)

    # --- reads across processes --------------------------------------------------------------

    def item_raw(self, item_id: str) -> bytes:
        """Raw bytes of any item the node holds (the owner of ``item_id`` as a process first)."""
        first = self.owner(item_id)
        for shard in (first, *(s for s in self.shards if s is not first)):
            try:
                return shard.item_raw(item_id)
            except NotFound:
                continue
        raise NotFound(f"item {item_id} is not stored on this node")

    def item_data(self, item_id: str) -> tuple[bytes, str]:
        """(data bytes, content type) of any item the node holds."""
        item = items.parse_unverified(self.item_raw(item_id))
        return item.data, items.first_tag(item, "Content-Type") or "application/octet-stream"

    def item_created_ms(self, item_id: str) -> int | None:
        """When the node stored ``item_id`` (ms since the epoch; the first shard holding it)."""
        for shard in self.shards:
            created = shard.item_created_ms(item_id)
            if created is not None:
                return created
        return None

    def find_items(self, *, ids: list[str] | None = None, owners: list[str] | None = None,
                   recipients: list[str] | None = None,
                   tags: list[tuple[str, list[str], bool]] | None = None,
                   after_row: int | None = None, ascending: bool = False,
                   limit: int = 10) -> list[tuple[int, bytes]]:
        """(cursor, raw item) of stored items matching every filter, merged over the shards."""
        if len(self.shards) == 1:
            return self.home.find_items(ids=ids, owners=owners, recipients=recipients, tags=tags,
                                        after_row=after_row, ascending=ascending, limit=limit)
        pages = []
        for index, shard in enumerate(self.shards):
            page = shard.find_items(ids=ids, owners=owners, recipients=recipients, tags=tags,
                                    after_row=_shard_after(after_row, index, ascending),
                                    ascending=ascending, limit=limit)
            pages.append([(row * MAX_SHARDS + index, raw) for row, raw in page])
        merged = heapq.merge(*pages, key=lambda r: r[0], reverse=not ascending)
        return list(merged)[:limit]

    def process_page(self, after: int, limit: int) -> list[ProcessRow]:
        """Hosted processes, oldest first per shard, after cursor ``after`` (0: the first)."""
        if len(self.shards) == 1:
            return self.home.process_page(after, limit)
        pages = []
        for index, shard in enumerate(self.shards):
            start = _shard_after(after or None, index, True)
            page = shard.process_page(start or 0, limit)
            pages.append([dataclasses.replace(r, cursor=r.cursor * MAX_SHARDS + index)
                          for r in page])
        return list(heapq.merge(*pages, key=lambda r: r.cursor))[:limit]

    def blocks(self) -> list[tuple[int, int]]:
        """The node's blocks as (height, timestamp ms), merged over the shards."""
        first: dict[int, int] = {}
        for shard in self.shards:
            for height, ts in shard.blocks():
                first[height] = min(ts, first.get(height, ts))
        return sorted(first.items())

    def broken_count(self) -> int:
        """Hosted processes that stopped evaluating since start, over all shards."""
        return sum(shard.broken_count() for shard in self.shards)

    def memory(self) -> tuple[Tally, int]:
        """Resident and evicted instances and their bytes, and the memory budget, over all
        shards (each shard keeps its share of ``memory_budget_bytes``)."""
        tallies, budgets = zip(*(shard.memory() for shard in self.shards), strict=True)
        total = Tally(*(sum(column) for column in zip(*(dataclasses.astuple(t) for t in tallies),
                                                       strict=True)))
        return total, sum(budgets)

    def outbox_by_status(self) -> dict[str, int]:
        """Outbox entry counts keyed by status, over all shards."""
        total: dict[str, int] = {}
        for shard in self.shards:
            for status, count in shard.outbox_by_status().items():
                total[status] = total.get(status, 0) + count
        return total

    def outbox_failures(self, limit: int = OUTBOX_FAILURES_SHOWN) -> list[dict[str, str]]:
        """The newest outbox items that ended undelivered (``failed``: a peer refused it;
        ``pending-remote``: no node hosts the target), with their reasons, over all shards."""
        rows = [row for shard in self.shards for row in shard.outbox_failures(limit)]
        return [{"item": key, "target": target, "status": status, "reason": reason}
                for key, target, status, reason in rows[:limit]]

    def status(self) -> dict[str, Any]:
        """Counters for health and operator status, summed over the shards."""
        counters = [shard.status() for shard in self.shards]
        merged = dict(counters[0])
        for key in ("processes", "schedule_backlog", "outbox_pending"):
            merged[key] = sum(int(c[key]) for c in counters)
        merged["shards"] = len(self.shards)
        return merged


def _missing_module(raw: bytes) -> str | None:
    """The Module a Process item names (NotFound for a Process: its module is not stored)."""
    try:
        item = items.parse_unverified(raw)
    except ApplianceError:
        return None
    if items.first_tag(item, "Type") != "Process":
        return None
    return items.first_tag(item, "Module") or None


def _shard_after(cursor: int | None, index: int, ascending: bool) -> int | None:
    """The per-shard row bound equivalent to a merged ``cursor`` (exclusive) for shard ``index``:
    rows of that shard whose merged cursor ``row × MAX_SHARDS + index`` lies beyond it."""
    if cursor is None:
        return None
    if ascending:  # row * M + index > cursor  <=>  row > (cursor - index) // M
        return (cursor - index) // MAX_SHARDS
    return -(-(cursor - index) // MAX_SHARDS)  # row * M + index < cursor  <=>  row < ceil(...)


__all__ = ["ALL_SLOTS", "LocalRouter", "Node", "ProgressListener", "Receipt", "local_shards"]
