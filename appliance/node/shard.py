"""One shard of the node: ingest → schedule → durable → evaluate → sign → store → push, for the
processes it owns (its own store, its own evaluation workers).

Front-ends never call a shard: they call :class:`appliance.node.node.Node`, which routes each
process to the shard that owns it. Everything a shard acknowledges is durable first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.ao import items
from appliance.compute import ComputeLimits, jsjson, module_format
from appliance.compute.limits import above_maximum, capped_limits
from appliance.errors import (
    AboveMaximum,
    ApplianceError,
    BadRequest,
    ConfigError,
    EvaluationError,
    ModuleError,
    NotFound,
    NotHosted,
    Overloaded,
    RequestError,
    StorageFull,
    TooLarge,
)
from appliance.logfmt import fields
from appliance.network.courier import Courier, RouteFn
from appliance.node.admission import Gate
from appliance.node.attest import make_attestation
from appliance.node.chain import report_data
from appliance.node.commit import DivergenceKind, plan_commit
from appliance.node.crank import CrankWindow, limit_outbox
from appliance.node.cron import (
    CRON_INTERVAL,
    Boundary,
    Cron,
    CronTick,
    cron_message,
    parse_crons,
    ticks_between,
)
from appliance.node.db import queries
from appliance.node.db.kinds import ItemKind, OutboxStatus
from appliance.node.db.store import Store, storage_error
from appliance.node.evaluator import (
    CheckpointFile,
    EvaluatorPool,
    ProcessMoved,
    WorkerCrashed,
    checkpoint_sha256,
    read_checkpoint,
)
from appliance.node.guest import ScheduledSlot, guest_env, guest_message_json, tag_list
from appliance.node.identity import NodeIdentity
from appliance.node.messenger import (
    Forward,
    Forwarding,
    Outbox,
    PushContext,
    prepare_outbox,
    push_outbox,
    schedule_spawned,
    split_assignment_key,
)
from appliance.node.observer import NodeObserver, ProgressListener, ProgressListeners
from appliance.node.residency import Kind, Residency, Tally
from appliance.node.results import (
    intents_between,
    record_intents,
    result_data,
    store_cron_result,
    store_result,
    stored_result,
    stored_results,
    unsigned_cron_result,
)
from appliance.node.routing import ShardRouter, SoleShard
from appliance.node.scheduler import (
    SchedulerContext,
    assign,
    create_process,
    existing_slot,
    load_item,
    schedule_message,
    store_item,
)
from appliance.node.settings import NodeSettings
from appliance.node.standing import StandingAttestation, assess, tdx_collateral_in
from attestation.atomic import write_atomically
from attestation.evidence import EvidenceProvider

log = logging.getLogger("appliance.node")
ScheduledEntry = tuple[ScheduledSlot, items.Item, items.Item]
ITEM_TYPES = ("Module", "Process", "Message")
MAX_WORKER_CRASHES = 3
DISK_FULL_RETRY_SECONDS = 1.0  # an actor whose commit found the disk full tries again
FORWARD_RETRY_SECONDS = (0.2, 5.0)  # first and longest wait before re-forwarding to a shard
# Batches one actor step evaluates back to back (each next one overlapping the commit of the
# previous); the actor's lock is released between steps.
PIPELINED_BATCHES = 8
# Checkpoints kept per process (older rows and files are deleted). A restart falls back to the
# older one, and then to slot 0, when a checkpoint file is missing or damaged.
CHECKPOINTS_KEPT = 2
# Dry-run copies kept resident in the dry-run workers (least recently used ones are closed).
DRY_RUN_RESIDENT = 8
"""``listener(process_id, slot)``: results up to ``slot`` are stored (or, with ``slot`` =
:data:`ALL_SLOTS`, the process stopped evaluating). Called from actor threads; must not block."""
ALL_SLOTS = 2**63


_SPAWN_TAKEN = (OutboxStatus.DELIVERED, OutboxStatus.SCHEDULED)
"""Outbox statuses of a Spawn another node or shard has scheduled: its parent is told."""

@dataclass(frozen=True)
class Receipt:
    """What the node acknowledges for an accepted item (durable by then)."""

    id: str
    type: str
    process_id: str | None = None
    slot: int | None = None
    warning: str | None = None
    timestamp_ms: int | None = None
    """When the scheduling node took it, if it said (a forwarded item: the peer's receipt)."""
    forwarded_to: str | None = None
    """The peer URL the item was forwarded to (None: scheduled here)."""


@dataclass
class _Actor:
    """One hosted process as its shard drives it: serial evaluation, its instance's state.

    At most one thread *drives* an actor at a time (``running`` says one does; it evaluates
    under ``lock``, which it drops between steps). Which lock guards which field:

    ===========================  =============================================================
    fields                       rule
    ===========================  =============================================================
    ``process_id``, ``lock``     immutable
    ``running``, ``pending``     ``Shard._actors_lock``
    ``broken``, ``crashes``      written by the driving thread only (holding ``lock`` or not);
                                 read by any thread without a lock (a reference swap: a stale
                                 read delays an error by one poll at most)
    ``horizon_ms``               raised by any thread without a lock (only ever raised; a lost
                                 raise is redone by the next cron tick)
    every other field            ``lock``: the instance (``generation``, ``evicted``,
                                 ``checkpoint_at``), the cursor (``next_slot``, ``cron_seq``,
                                 ``cron_after``, ``since_checkpoint``, ``last_checkpoint``),
                                 what ``_open`` reads from the items, ``state_forced_at``,
                                 ``crank``; held by the driving thread, dry-runs, ``state``,
                                 ``checkpoint_now`` and eviction
    ===========================  =============================================================
    """

    process_id: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False
    pending: bool = False
    generation: int | None = None
    next_slot: int = 0
    env_json: bytes = b""
    module_id: str = ""
    since_checkpoint: int = 0
    last_checkpoint: float = field(default_factory=time.monotonic)
    broken: str | None = None
    crashes: int = 0
    crons: tuple[Cron, ...] = ()
    origin: Boundary = field(default_factory=lambda: Boundary(0, 0, 0))
    owner: str = ""
    cron_seq: int = 0
    cron_after: tuple[int, int, int] | None = None
    horizon_ms: int = 0
    module_path: Path = Path()
    module_format: str = ""
    limits: ComputeLimits = field(default_factory=ComputeLimits)
    state_forced_at: float | None = None
    crank: CrankWindow = field(default_factory=CrankWindow)
    checkpoint_at: tuple[int, int] = (-1, 0)
    """(slot, cron results) of the newest checkpoint the instance was restored from or wrote."""
    evicted: bool = False
    """Closed to stay within the memory budget; the next step restores it from its checkpoint."""

    def mark_broken(self, why: str) -> None:
        """Stop evaluating this process for good (until restart): ``why`` is what readers see."""
        self.broken = why

    def worker_crashed(self) -> bool:
        """Count a crash of the actor's worker; True when that was one too many (now broken)."""
        self.crashes += 1
        if self.crashes > MAX_WORKER_CRASHES:
            self.mark_broken(f"its evaluation worker crashed {self.crashes} times")
            return True
        return False

    def advanced(self, last_slot: int, messages: int) -> None:
        """Results up to ``last_slot`` are stored (``messages`` of them evaluated just now)."""
        self.next_slot = last_slot + 1
        self.since_checkpoint += messages

    def checkpointed(self, slot: int) -> None:
        """A checkpoint of the instance's current state at ``slot`` is stored."""
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.checkpoint_at = (slot, self.cron_seq)

    def ahead_of_checkpoint(self) -> bool:
        """The instance evaluated past its newest checkpoint (closing it would lose work)."""
        return self.next_slot > 0 and (self.next_slot - 1, self.cron_seq) != self.checkpoint_at

    def mark_evicted(self) -> None:
        """Its instance was closed; the next step reopens it from its newest checkpoint."""
        self.generation = None
        self.evicted = True


@dataclass
class _DryCopy:
    """The dry-run copy of one process: which slot (and dry worker generation) it holds."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: tuple[int, int, int] | None = None


def authority_warning(process: items.Item, node_address: str) -> str | None:
    """Why aos will distrust what this node delivers to ``process``, or ``None``.

    aos trusts a message only when its ``From`` or ``Owner`` is listed in the process's
    ``Authority`` tags (comma-separated values allowed). Messages one process sends another
    reach it signed by this node, so without this node among the authorities aos drops them.
    """
    listed = {part.strip() for name, value in process.tags if name == "Authority"
              for part in value.split(",")}
    if node_address in listed:
        return None
    return (f"the process lists no Authority this node signs as ({node_address}): aos will "
            f"not trust the messages this node delivers to it from other processes; spawn it "
            f"with the tag Authority={node_address}")


class Shard:
    """SU + CU + MU for the processes one shard of the node owns."""

    def __init__(self, settings: NodeSettings, identity: NodeIdentity,
                 provider: EvidenceProvider, config_digest: bytes, *,
                 observer: NodeObserver | None = None, resume: bool = True) -> None:
        """With ``resume`` the shard is the node's only one and starts evaluating at once;
        without, it waits for :meth:`start` to give it its router."""
        self.observer: NodeObserver = observer or NodeObserver()
        self.router: ShardRouter = SoleShard()
        self._forward_lock = threading.Lock()
        self._forward_wait = FORWARD_RETRY_SECONDS[0]
        self._forward_timer: threading.Timer | None = None
        self._courier: Courier | None = None
        self.settings = settings
        self.identity = identity
        self.provider = provider
        self.config_digest = config_digest
        self.store = Store(settings.data_dir)
        self.pool = EvaluatorPool(settings.workers, settings.cache_dir,
                                  move_after=settings.move_after_seconds or None,
                                  on_move=self._moved, on_retire=self._retire)
        self._executor = ThreadPoolExecutor(max_workers=settings.workers * 2,
                                            thread_name_prefix="actor")
        self._actors: dict[str, _Actor] = {}
        self._actors_lock = threading.Lock()
        self._valid_modules: dict[str, None] = {}  # ids whose wasm validated (insertion order)
        self._progress = threading.Condition()
        self._listeners = ProgressListeners()
        self._dry_gate = Gate(settings.dry_run_concurrency, "dry-runs",
                              retry_after=settings.dry_run_wall_clock_seconds)
        self._dry_pool: EvaluatorPool | None = None
        self._dry_copies: OrderedDict[str, _DryCopy] = OrderedDict()
        self._dry_lock = threading.Lock()
        self.residency = Residency(settings.memory_budget_bytes)
        self._budget_lock = threading.Lock()
        self._standing_lock = threading.Lock()
        self.standing = self._standing_attestation()
        self._closing = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                           name="attestation-refresh")
        self._refresher.start()
        self._cron_processes = queries.processes_tagged(self.store.reader, CRON_INTERVAL)
        self._blocks: dict[int, int] = {h: ts // 1000 * 1000 for h, ts in
                                        queries.block_starts(self.store.reader).items()}
        self._monitor: threading.Thread | None = None
        if settings.cron_tick_seconds > 0:
            self._monitor = threading.Thread(target=self._monitor_crons, name="cron-monitor",
                                             daemon=True)
            self._monitor.start()
        if resume:
            self._resume_pending()

    def start(self, router: ShardRouter) -> None:
        """Join a node of several shards: ``router`` reaches the others. Evaluation resumes and
        outbox items left to forward are pushed again."""
        self.router = router
        self._resume_pending()
        self._forward_pending()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def attestation_id(self) -> str:
        """The standing attestation new Results name (it changes when it is refreshed)."""
        return self.standing.id

    def _standing_attestation(self) -> StandingAttestation:
        nonce = os.urandom(32)
        item = self._attest(nonce, "standing")

        self.store.write(lambda conn: queries.set_meta(conn, "standing_attestation", item.id))
        standing = assess(item, datetime.now(UTC),
                          report_data(self.identity.public_key, self.config_digest, nonce),
                          tdx_collateral_in(self.settings.data_dir / "collateral"))
        self.observer.evidence_verified("self", standing.step, standing.ok)
        return standing

    def refresh_attestation(self) -> StandingAttestation:
        """Make a new standing attestation; Results signed from now on name it."""
        with self._standing_lock:
            self.standing = self._standing_attestation()
        log.info("standing attestation refreshed: %s (%s, TCB %s)", self.standing.id,
                 self.standing.step, self.standing.tcb_status)
        return self.standing

    def _refresh_loop(self) -> None:
        interval = self.settings.attestation_refresh_seconds
        while not self._closing.wait(interval):
            try:
                self.refresh_attestation()
            except Exception:  # the TEE failed: counted by _attest; keep the current one
                log.exception("scheduled attestation refresh failed")

    def attest(self, nonce: bytes, *, keep: bool = True) -> items.Item:
        """A fresh Attestation item binding this node's key for ``nonce``; stored only with
        ``keep`` (anonymous HTTP callers get it unstored: results name only the standing
        attestation, and a caller keeps the item it asked for)."""
        return self._attest(nonce, "fresh", keep=keep)

    def _attest(self, nonce: bytes, kind: str, keep: bool = True) -> items.Item:
        try:
            item = make_attestation(self.identity, self.provider, self.config_digest, nonce)
            if keep:
                self.store.write(lambda conn: store_item(conn, item, ItemKind.ATTESTATION))
        except Exception:
            self.observer.attested(kind, ok=False)
            raise
        self.observer.attested(kind, ok=True)
        return item

    def publish_location(self, url: str) -> str:
        """Sign and store this node's ``Scheduler-Location`` record pointing at ``url``."""
        tags = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Scheduler-Location"),
                ("Url", url), ("Time-To-Live", str(7 * 24 * 3600 * 1000))]
        item = items.sign(self.identity, tags=tags, anchor=hashlib.sha256(url.encode()).digest())
        self.store.write(lambda conn: store_item(conn, item, ItemKind.SCHEDULER_LOCATION))
        return str(item.id)

    def connect_peers(self, route: RouteFn) -> None:
        """Start pushing ``pending`` outbox items to the peers ``route`` names (once)."""
        if self._courier is None and not self._closing.is_set():
            self._courier = Courier(self, route, name="courier")
            self._courier.start()

    def pending_pushes(self, limit: int) -> list[queries.PendingPush]:
        """Outbox rows the courier is still to push, in order per sending process."""
        return queries.outbox_pending(self.store.reader, limit)

    def settle_pushes(self, settled: list[tuple[queries.PendingPush, OutboxStatus, str]]
                      ) -> None:
        """Record what became of pushes (to peers, or to other shards), in one transaction; the
        parent of a Spawn now scheduled elsewhere gets its Spawned notice in it."""
        ctx = self._ctx()

        def settle(conn: Any) -> set[str]:
            woken: set[str] = set()
            for row, status, detail in settled:
                queries.set_outbox_status(conn, row.key, status, detail)
                if status in _SPAWN_TAKEN and row.kind == "spawn" and \
                        schedule_spawned(conn, ctx, items.parse_unverified(row.raw),
                                         row.from_process, row.depth):
                    woken.add(row.from_process)
            return woken

        for process_id in self.store.write(settle):
            self._wake(process_id)

    def _resume_pending(self) -> None:
        for pid in queries.processes_behind(self.store.reader):
            self._wake(pid)

    def close(self) -> None:
        """Finish in-flight batches and stop workers and the store."""
        self._closing.set()
        if self._courier is not None:
            self._courier.close()
        with self._forward_lock:
            if self._forward_timer is not None:
                self._forward_timer.cancel()
        self._refresher.join(timeout=60)
        if self._monitor is not None:
            self._monitor.join(timeout=30)
        self._executor.shutdown(wait=True)
        self.pool.stop()
        if self._dry_pool is not None:
            self._dry_pool.stop()
        self.store.close()

    def add_progress_listener(self, listener: ProgressListener) -> None:
        """Call ``listener(process_id, slot)`` whenever results are stored or a process stops
        evaluating (front-ends wake their waiting readers with it, holding no thread)."""
        self._listeners.add(listener)

    def remove_progress_listener(self, listener: ProgressListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def _notify(self, process_id: str, slot: int) -> None:
        self._listeners.notify(process_id, slot)
        with self._progress:
            self._progress.notify_all()

    def _ctx(self) -> SchedulerContext:
        return SchedulerContext(self.identity, self.attestation_id, self.settings.block_height)

    # --- ingest ------------------------------------------------------------------------------

    def ingest(self, raw: bytes) -> Receipt:
        """Verify, classify, schedule and durably store one client data item."""
        try:
            receipt = self._ingest(raw)
        except Exception as exc:
            self.observer.item_rejected(exc)
            raise
        self.observer.item_accepted(receipt.type)
        return receipt

    def _ingest(self, raw: bytes) -> Receipt:
        if len(raw) > self.settings.max_item_bytes:
            raise TooLarge(f"item of {len(raw)} bytes exceeds the limit of "
                           f"{self.settings.max_item_bytes}")
        item = items.parse_verified(raw, self.settings.max_item_bytes)
        if items.first_tag(item, "Data-Protocol") != "ao":
            raise BadRequest("item lacks the tag Data-Protocol: ao")
        kind = items.first_tag(item, "Type")
        if kind not in ITEM_TYPES:
            raise BadRequest(f"Type tag must be one of {', '.join(ITEM_TYPES)}; got {kind!r}")
        if kind == "Module":
            return self._ingest_module(item)
        if kind == "Process":
            return self._ingest_process(item)
        return self._ingest_message(item)

    def _ingest_module(self, item: items.Item) -> Receipt:
        fmt = items.first_tag(item, "Module-Format")
        if fmt is None:
            raise BadRequest("a Module item needs a Module-Format tag")
        module_format(fmt)
        self._within_maximum(item)
        if item.id not in self._valid_modules:
            self.pool.validate_module(item.id, item.data)
            with self._actors_lock:
                self._valid_modules[item.id] = None
                while len(self._valid_modules) > 1024:
                    del self._valid_modules[next(iter(self._valid_modules))]
        self.store.write(lambda conn: store_item(conn, item, ItemKind.MODULE))
        return Receipt(item.id, "Module")

    def _ingest_process(self, item: items.Item) -> Receipt:
        scheduler = items.first_tag(item, "Scheduler")
        if scheduler != self.identity.address:
            raise NotHosted(f"process names scheduler {scheduler!r}; this node is "
                            f"{self.identity.address}")
        crons = parse_crons(item.tags)
        module = load_item(self.store.reader, items.first_tag(item, "Module") or "")
        self._within_maximum(*([module] if module is not None else []), item)
        ctx = self._ctx()
        self.store.write(lambda conn: create_process(conn, ctx, item))
        if crons:
            self._cron_processes.add(item.id)
        self._wake(item.id)
        warning = authority_warning(item, self.identity.address)
        if warning is not None:
            log.warning("process %s: %s", item.id, warning)
        return Receipt(item.id, "Process", item.id, 0, warning)

    def _within_maximum(self, *tagged: items.Item) -> None:
        """Refuse a module or process whose limit tags ask for more than the operator allows."""
        try:
            why = above_maximum([t for i in tagged for t in tag_list(i.tags)], self.settings.limits)
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        if why is not None:
            raise AboveMaximum(f"{why} (limits.memory and limits.fuel in its config); tags may "
                               "lower the node's limits, never raise them")

    def _ingest_message(self, item: items.Item) -> Receipt:
        if not item.target:
            raise BadRequest("a Message item needs a Target (the process id)")
        ctx = self._ctx()
        pushed = [items.first_tag(item, name) for name in ("From-Process", "Pushed-For",
                                                          "Reference")]
        target = item.target

        def schedule(conn: Any) -> tuple[str, int]:
            if all(pushed) and item.owner_address != self.identity.address:
                from_process, pushed_for, reference = (str(v) for v in pushed)
                original = queries.pushed_duplicate(conn, target, from_process, pushed_for,
                                                    reference)
                if original is not None and original != item.id:
                    slot = existing_slot(conn, target, original)
                    if slot is not None:  # a second push of the same message: its receipt
                        return original, slot
            return item.id, schedule_message(conn, ctx, item, target, 0)

        message_id, slot = self.store.write(schedule)
        self._wake(target)
        return Receipt(message_id, "Message", target, slot)

    # --- actors ------------------------------------------------------------------------------

    def _wake(self, process_id: str) -> None:
        with self._actors_lock:
            actor = self._actors.get(process_id)
            if actor is None:
                actor = self._actors[process_id] = _Actor(process_id)
            if actor.running:
                actor.pending = True
                return
            actor.running = True
        self._executor.submit(self._drive, actor)

    def _drive(self, actor: _Actor) -> None:
        evaluated = False
        while True:
            try:
                with actor.lock:
                    progressed = self._step(actor)
                evaluated |= progressed
            except ProcessMoved as exc:
                with actor.lock:
                    actor.generation = None
                log.info("process %s: %s", actor.process_id, exc)
                progressed = True
            except WorkerCrashed:
                self.observer.worker_crashed()
                if actor.worker_crashed():
                    log.error("process %s: %s", actor.process_id, actor.broken)
                    progressed = False
                else:
                    log.warning("evaluation worker for %s restarted; reopening",
                                actor.process_id)
                    progressed = True
            except Exception as exc:
                if isinstance(storage_error(exc), StorageFull):
                    log.warning("process %s: disk full (%s); retrying in %g s",
                                actor.process_id, exc, DISK_FULL_RETRY_SECONDS)
                    with actor.lock:  # the worker ran ahead of what is stored: reopen
                        actor.generation = None
                    self.observer.commit_deferred()
                    self._retry_later(actor.process_id)
                else:
                    log.exception("process %s stopped evaluating", actor.process_id)
                    actor.mark_broken("internal error; see the node log")
                progressed = False
            if actor.broken is not None:
                self._notify(actor.process_id, ALL_SLOTS)
            with self._actors_lock:
                if not progressed and not actor.pending:
                    actor.running = False
                    with self._progress:
                        self._progress.notify_all()
                    break
                actor.pending = False
        if evaluated:
            self._went_idle(actor)

    def _retry_later(self, process_id: str) -> None:
        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the node closed meanwhile
                self._wake(process_id)
        timer = threading.Timer(DISK_FULL_RETRY_SECONDS, wake)
        timer.daemon = True
        timer.start()

    def _open(self, actor: _Actor) -> None:
        pid = actor.process_id
        process = load_item(self.store.reader, pid)
        if process is None:
            raise NotFound(f"process {pid} is not hosted on this node")
        module_id = items.first_tag(process, "Module") or ""
        module = load_item(self.store.reader, module_id)
        if module is None:
            raise NotFound(f"module {module_id} is missing")
        path = self.settings.module_dir / f"{module_id}.wasm"
        if not path.exists():
            write_atomically(path, module.data)  # a unique temporary: actors open concurrently
        limits = capped_limits(tag_list(module.tags) + tag_list(process.tags),
                               self.settings.limits)
        fmt = items.first_tag(module, "Module-Format") or ""
        rows = queries.checkpoints(self.store.reader, pid)
        actor.generation = None
        actor.next_slot, actor.checkpoint_at = 0, (-1, 0)
        actor.crons = parse_crons(process.tags)
        actor.owner = process.owner_address
        actor.cron_seq, actor.cron_after = 0, None
        for row in rows:
            try:
                report = self.pool.open(pid, path, fmt, limits, CheckpointFile(
                    row.file, row.sha256, row.raw_size, row.clock))
            except WorkerCrashed:
                raise
            except EvaluationError as exc:
                log.warning("process %s: checkpoint at slot %s is unusable (%s); trying an "
                            "older one", pid, row.slot, exc)
                continue
            actor.next_slot = row.slot + 1
            actor.checkpoint_at = (row.slot, row.crons)
            self._restore_cron_cursor(actor, row.crons)
            break
        else:
            report = self.pool.open(pid, path, fmt, limits, None)
        # read after the open: it may have moved the process (a restart of its worker since
        # then makes the next call raise ProcessMoved)
        actor.generation = self.pool.generation(pid)
        if actor.crons:
            self._cron_processes.add(pid)  # spawned by a process: not seen at ingest
            origin = self._boundary(pid, 0)
            actor.origin = origin if origin is not None else Boundary(0, 0, 0)
        if report.compiled:
            log.info("%s", fields("module compiled", module=module_id, format=fmt,
                                  ms=report.load_seconds * 1000))
        log.info("%s", fields(
            "process restored" if actor.next_slot else "process opened", process=pid,
            checkpoint_slot=actor.next_slot - 1 if actor.next_slot else None,
            module=module_id, load_ms=report.load_seconds * 1000,
            instantiate_ms=report.instantiate_seconds * 1000))
        actor.env_json = jsjson.stringify(guest_env(process, module))
        actor.module_id = module_id
        actor.module_path, actor.module_format, actor.limits = path, fmt, limits
        self.residency.used(Kind.PROCESS, pid, report.resident_bytes)
        if actor.evicted:
            actor.evicted = False
            self.observer.instance_restored(report.resident_bytes,
                                            report.load_seconds + report.instantiate_seconds)

    def _step(self, actor: _Actor) -> bool:
        if actor.broken is not None:
            return False
        pid = actor.process_id
        if actor.generation != self.pool.generation(pid):
            try:
                self._open(actor)
            except WorkerCrashed:
                raise
            except (ModuleError, NotFound, EvaluationError, BadRequest) as exc:
                actor.mark_broken(str(exc))
                log.error("process %s cannot be evaluated: %s", pid, exc)
                return False
        if actor.crons:
            return self._cron_step(actor)
        slots, batch = self._read_batch(actor, actor.next_slot)
        if not slots:
            return False
        started = time.perf_counter()
        pending = self.pool.begin_evaluate(pid, batch)
        for round_ in range(PIPELINED_BATCHES):
            # Read the next batch while the worker runs this one, and start it in the worker
            # as soon as this one is back, to run while this one is signed and committed. Not
            # across a checkpoint: that must capture the state right after this batch.
            following: tuple[list[ScheduledSlot], list[tuple[bytes, bytes]]] | None = None
            if round_ + 1 < PIPELINED_BATCHES and not self._checkpoint_due(actor, len(slots)):
                following = self._read_batch(actor, slots[-1].slot + 1)
                if not following[0]:
                    following = None
            outputs = pending.result()
            self.observer.batch_evaluated(len(batch), time.perf_counter() - started)
            moved = False
            if following is not None:
                started = time.perf_counter()
                try:
                    pending = self.pool.begin_evaluate(pid, following[1])
                except ProcessMoved:  # commit this batch first; the next step reopens
                    following, moved = None, True
            try:
                self._commit_results(actor, slots, outputs)
            except BaseException:
                if following is not None:
                    with contextlib.suppress(Exception):
                        pending.result()  # release the worker; this process stops anyway
                raise
            actor.advanced(slots[-1].slot, len(slots))
            if moved:
                actor.generation = None
                return True
            if following is None:
                break
            slots, batch = following
        if self._checkpoint_due(actor, 0):
            self._checkpoint(actor, slots[-1].slot, may_move=True)
        return True

    # --- cron (see appliance.node.cron and docs/api.md "Cron") ------------------------------

    def _restore_cron_cursor(self, actor: _Actor, crons: int) -> None:
        """Resume the cron walk after the first ``crons`` cron results (a checkpoint's)."""
        actor.cron_seq, actor.cron_after = crons, None
        if crons:
            actor.cron_after = queries.cron_position(self.store.reader, actor.process_id,
                                                     crons - 1)

    def _boundary(self, pid: str, slot: int) -> Boundary | None:
        row = queries.slot_at(self.store.reader, pid, slot)
        return None if row is None else Boundary(row.timestamp_ms, row.block_height, slot)

    def _cron_head(self, pid: str, slot: int) -> str | None:
        """The id of the last cron Result after ``slot``: the chain's head before ``slot + 1``."""
        return queries.cron_head(self.store.reader, pid, slot)

    def blocks(self) -> list[tuple[int, int]]:
        """The node's blocks as (height, timestamp ms): one per Block-Height its assignments
        carry, timed at the first such assignment's second (the node makes no other blocks)."""
        height = self.settings.block_height
        if height not in self._blocks:
            start = queries.block_start(self.store.reader, height)
            if start is not None:
                self._blocks[height] = start // 1000 * 1000
        return sorted(self._blocks.items())

    def _cron_step(self, actor: _Actor) -> bool:
        """Evaluate the cron messages due before the next slot (or up to the horizon), else a
        batch of slots with no cron message between them."""
        pid = actor.process_id
        first = actor.next_slot
        slots, batch = self._read_batch(actor, first)
        left = self._boundary(pid, first - 1) if first > 0 else None
        if left is not None:
            right = slots[0].timestamp_ms if slots else actor.horizon_ms
            ticks = ticks_between(actor.crons, actor.origin, left, right, blocks=self.blocks(),
                                  after=actor.cron_after)
            if ticks:
                self._evaluate_crons(actor, ticks)
                return True
        if not slots:
            return False
        keep = 1
        while keep < len(slots) and not ticks_between(
                actor.crons, actor.origin,
                Boundary(slots[keep - 1].timestamp_ms, slots[keep - 1].block_height,
                         slots[keep - 1].slot),
                slots[keep].timestamp_ms, blocks=self.blocks(), limit=1):
            keep += 1
        slots, batch = slots[:keep], batch[:keep]
        started = time.perf_counter()
        outputs = self.pool.evaluate(pid, batch)
        self.observer.batch_evaluated(len(batch), time.perf_counter() - started)
        self._commit_results(actor, slots, outputs)
        actor.advanced(slots[-1].slot, len(slots))
        if self._checkpoint_due(actor, 0):
            self._checkpoint(actor, slots[-1].slot, may_move=True)
        return True

    def _evaluate_crons(self, actor: _Actor, ticks: list[CronTick]) -> None:
        pid = actor.process_id
        batch = [(jsjson.stringify(cron_message(t, pid, actor.owner)), actor.env_json)
                 for t in ticks]
        started = time.perf_counter()
        outputs = self.pool.evaluate(pid, batch)
        self.observer.batch_evaluated(len(batch), time.perf_counter() - started)
        first_seq = actor.cron_seq
        reader = self.store.reader
        stored = queries.stored_cron_results(reader, pid, first_seq, first_seq + len(ticks) - 1)
        prev = queries.cron_link(reader, pid, first_seq - 1)
        signed: list[tuple[int, CronTick, items.Item, Outbox]] = []
        # A cron message in the second of the message it follows is as deep as that message:
        # the CU re-fires a second's cron after every message landing in it (docs/api.md), so a
        # cron handler messaging its own process would loop there; the push bound stops it.
        row = queries.slot_at(reader, pid, ticks[0].ordinate)
        left_depth, left_second = (row.push_depth, row.timestamp_ms // 1000) if row else (0, -1)
        prev_id = prev[1] if prev is not None and prev[0] == ticks[0].ordinate else None
        if prev_id is None:
            head = stored_result(self.store.reader, pid, ticks[0].ordinate)
            if head is None:
                raise EvaluationError(f"slot {ticks[0].ordinate} of {pid} has no result")
            prev_id = head[0]
        for seq, (tick, out) in enumerate(zip(ticks, outputs, strict=True), start=first_seq):
            done = stored.get(seq)
            if done is not None:
                if done[1] != result_data(out):
                    self.observer.divergence()
                    log.critical("replay of %s cron %d differs from its stored result", pid, seq)
                prev_id = done[0]
                continue
            item = unsigned_cron_result(pid, tick, out, prev_id, self.attestation_id).sign(
                self.identity)
            prev_id = item.id
            origin = ScheduledSlot(pid, tick.ordinate, "", "", "", tick.timestamp_ms,
                                   tick.block_height, self.attestation_id,
                                   left_depth if tick.timestamp_ms // 1000 == left_second else 0)
            outbox = prepare_outbox(self.identity, PushContext(
                origin, actor.module_id, self.settings.max_push_depth, seq), out)
            signed.append((seq, tick, item, outbox))
        # Signed and stored in one transaction: nothing signed leaves the node before it is
        # stored, and a crash before the commit leaves nothing to contradict.
        if signed:
            self._store_and_push(pid, [
                (functools.partial(store_cron_result, seq=seq, tick=tick, signed=item), outbox)
                for seq, tick, item, outbox in signed])
        actor.cron_seq += len(ticks)
        actor.cron_after = ticks[-1].position
        with self._progress:
            self._progress.notify_all()

    def _horizon_now(self) -> int:
        # Read inside the writer: every assignment committed after this has a later timestamp
        # (as long as the wall clock does not step back), so no slot can land behind crons
        # already evaluated up to this instant.
        now: int = self.store.write(lambda _conn: time.time_ns() // 1_000_000)
        return now

    def tick_crons(self, process_id: str, wait: bool = True) -> None:
        """Evaluate ``process_id``'s cron messages up to now (as the CU does on reads)."""
        actor = self._actor(process_id)
        if process_id not in self._cron_processes:
            return
        actor.horizon_ms = max(actor.horizon_ms, self._horizon_now())
        self._wake(process_id)
        if not wait:
            return
        deadline = time.monotonic() + self.settings.result_wait_seconds
        while time.monotonic() < deadline:
            with self._actors_lock:
                idle = not actor.running
            if idle or actor.broken:
                return
            with self._progress:
                self._progress.wait(0.5)

    def _monitor_crons(self) -> None:
        """Keep every cron process ticking, as AO's MU monitor polls ``/cron`` for it."""
        while not self._closing.wait(self.settings.cron_tick_seconds):
            for pid in list(self._cron_processes):
                try:
                    self.tick_crons(pid, wait=False)
                except Exception:  # one process never stops the monitor
                    log.exception("cron tick of %s failed", pid)

    def cron_page(self, process_id: str, *, after: tuple[int, str, str] | None,
                  since_ms: int | None, upto: tuple[int, str | None, str | None] | None,
                  limit: int) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], bool]:
        """Cron results (cursor fields, result JSON) in evaluation order, errors left out.

        ``after`` (timestamp, ordinate, cron) is exclusive, ``since_ms`` inclusive, ``upto``
        inclusive; ordinate and cron compare as text, as the CU's evaluation ids do.
        """
        self._actor(process_id)
        rows = queries.cron_page(self.store.reader, process_id, after=after, since_ms=since_ms,
                                 upto=upto, limit=limit + 1)
        out = []
        for row in rows:
            value: dict[str, Any] = json.loads(row.data)
            if value.get("Error") is None:
                out.append(({"timestamp": row.timestamp_ms, "ordinate": str(row.after_slot),
                             "cron": row.cron}, value))
        return out[:limit], len(rows) > limit

    def cron_results_between(self, process_id: str, first_slot: int,
                             last_slot: int) -> list[bytes]:
        """Raw cron Result items after slots ``first_slot..last_slot``, in chain order."""
        return queries.cron_result_items(self.store.reader, process_id, first_slot, last_slot)

    def _checkpoint_due(self, actor: _Actor, more: int) -> bool:
        return (actor.since_checkpoint + more >= self.settings.checkpoint_every_messages
                or time.monotonic() - actor.last_checkpoint
                >= self.settings.checkpoint_every_seconds)

    def _read_batch(self, actor: _Actor,
                    first: int) -> tuple[list[ScheduledSlot], list[tuple[bytes, bytes]]]:
        """The next scheduled slots from ``first`` and their (msg, env) JSON for the guest."""
        rows = queries.schedule_batch(self.store.reader, actor.process_id, first,
                                      self.settings.batch_size)
        slots = [s for s, _ in rows]
        batch = []
        for s, raw in rows:
            if raw is None:
                raise EvaluationError(f"scheduled message {s.message_id} is missing")
            item = items.parse_unverified(raw)
            batch.append((guest_message_json(item, s), actor.env_json))
        return slots, batch

    def _commit_results(self, actor: _Actor, slots: list[ScheduledSlot],
                        outputs: list[dict[str, Any]]) -> None:
        pid = actor.process_id
        reader = self.store.reader
        stored = stored_results(reader, pid, slots[0].slot - 1, slots[-1].slot)
        intents = intents_between(reader, pid, slots[0].slot, slots[-1].slot)
        previous = stored.get(slots[0].slot - 1)
        prev_id = previous[0] if previous else None
        if actor.crons:
            prev_id = self._cron_head(pid, slots[0].slot - 1) or prev_id
        plan = plan_commit(slots, outputs, stored, intents, head=prev_id,
                           attestation_id=self.attestation_id, signer=self.identity,
                           module_id=actor.module_id,
                           max_push_depth=self.settings.max_push_depth,
                           limit=lambda s, out: self._limit_outbox(actor, s, out))
        for divergence in plan.divergences:
            self.observer.divergence()
            if divergence.kind is DivergenceKind.REPLAY:
                log.critical("replay of %s slot %d differs from its stored result", pid,
                             divergence.slot)
            else:
                log.critical("%s slot %d re-evaluated differently; signing the recorded "
                             "intent", pid, divergence.slot)
        if not plan.results:
            return
        if plan.intents:
            self.store.write(record_intents(plan.intents))
        self._store_and_push(pid, [
            (functools.partial(store_result, slot=signed.slot, signed=signed.item), outbox)
            for signed, outbox in zip(plan.results, plan.outboxes, strict=True)])
        self.observer.results_committed([signed.output for signed in plan.results])
        self._notify(pid, plan.results[-1].slot.slot)

    def _fetch_spawned_modules(self, outboxes: list[Outbox]) -> None:
        """Store the Modules that Spawns of ``outboxes`` name and only another shard or a peer
        holds (before the transaction: fetching may take a network round trip)."""
        for outbox in outboxes:
            for out in outbox.outgoing:
                module_id = items.first_tag(out.item, "Module") if out.kind == "spawn" else None
                if module_id and load_item(self.store.reader, module_id) is None:
                    raw = self.router.module(module_id)
                    if raw is not None:
                        self._ingest_module(items.parse_verified(raw,
                                                                 self.settings.max_item_bytes))

    def _store_and_push(self, pid: str,
                        rows: list[tuple[Callable[[Any], None], Outbox]]) -> None:
        """In one transaction, store each signed result (``rows``: a function writing it, and
        its outbox) and push its outbox; then forward what other shards own and wake the local
        targets."""
        self._fetch_spawned_modules([outbox for _, outbox in rows])
        ctx = self._ctx()
        forwarding = self._forwarding()

        def commit(conn: Any) -> set[str]:
            woken: set[str] = set()
            if forwarding is not None:
                forwarding.forwards.clear()  # a retried transaction starts over
            for store, outbox in rows:
                store(conn)
                woken |= push_outbox(conn, ctx, outbox, forwarding,
                                     peered=self.settings.peered)
            return woken

        woken = self.store.write(commit)
        if self._courier is not None:
            self._courier.wake()
        if forwarding is not None and forwarding.forwards:
            self._forward(forwarding.forwards)
        for target in woken:
            if target != pid:
                self._wake(target)

    # --- cross-shard delivery ----------------------------------------------------------------

    def _forwarding(self) -> Forwarding | None:
        return None if isinstance(self.router, SoleShard) else Forwarding(self.router)

    def _forward(self, forwards: list[Forward]) -> None:
        """Push committed ``forwarding`` outbox items to the shards owning their targets and
        record what became of them; a shard that cannot be reached is tried again later."""
        for fwd in forwards:
            try:
                self.router.push(fwd.target, fwd.raw, fwd.kind, fwd.depth)
            except RequestError as exc:
                if isinstance(exc, Overloaded):
                    self._forward_later(str(exc))
                    return
                status, detail = OutboxStatus.PENDING_REMOTE, str(exc)
                log.warning("%s", fields("outbox delivery failed", item=fwd.key, kind=fwd.kind,
                                         target=fwd.target, status=status, reason=detail))
            except Exception as exc:  # noqa: BLE001 - the owner is gone or restarting: retried
                self._forward_later(f"{type(exc).__name__}: {exc}")
                return
            else:
                status, detail = OutboxStatus.SCHEDULED, ""
            if status is OutboxStatus.SCHEDULED and fwd.kind == "spawn":
                self._spawned(fwd.key, fwd.raw, fwd.depth)
                continue
            self._set_outbox_status(fwd.key, status, detail)
        self._forward_wait = FORWARD_RETRY_SECONDS[0]

    def _spawned(self, key: str, raw: bytes, depth: int) -> None:
        """Mark a Spawn another shard scheduled, and schedule its parent's Spawned notice."""
        parent = queries.outbox_sender(self.store.reader, key) or ""
        self.settle_pushes([(queries.PendingPush(key, parent, 0, key, "spawn", raw, depth),
                             OutboxStatus.SCHEDULED, "")])

    def _set_outbox_status(self, key: str, status: OutboxStatus, detail: str) -> None:
        self.store.write(lambda conn: queries.set_outbox_status(conn, key, status, detail))

    def _forward_later(self, why: str) -> None:
        with self._forward_lock:
            if self._closing.is_set() or self._forward_timer is not None:
                return
            wait = self._forward_wait
            self._forward_wait = min(wait * 2, FORWARD_RETRY_SECONDS[1])
            log.warning("%s", fields("forwarding to another shard deferred", retry_s=wait,
                                     reason=why))
            timer = self._forward_timer = threading.Timer(wait, self._forward_again)
            timer.daemon = True
            timer.start()

    def _forward_again(self) -> None:
        with self._forward_lock:
            self._forward_timer = None
        with contextlib.suppress(RuntimeError, ApplianceError):  # closed meanwhile
            self._forward_pending()

    def _forward_pending(self) -> None:
        """Push again every outbox item still recorded ``forwarding`` (after a restart)."""
        if isinstance(self.router, SoleShard):
            return
        reader = self.store.reader
        forwards = []
        for key, target, kind, depth in queries.outbox_forwarding(reader):
            raw = queries.item_raw(reader, split_assignment_key(key)[0]
                                   if kind == "assignment" else key)
            if raw is not None:
                forwards.append(Forward(key, target, raw, kind, depth))
        if forwards:
            self._forward(forwards)

    def accept(self, target: str, raw: bytes, kind: str, push_depth: int) -> None:
        """Store an item another shard of the node pushed to ``target`` (``kind``: message,
        spawn or assignment) and schedule it; idempotent by the item's id, as local delivery
        is. Pushed Messages and Spawns must be signed by this node; an Assignment names any
        stored (verified) message."""
        item = items.parse_verified(raw, self.settings.max_item_bytes)
        if kind != "assignment" and item.owner_address != self.identity.address:
            raise BadRequest("a shard takes only items this node signed from another shard")
        ctx = self._ctx()
        if kind == "message":
            self.store.write(lambda conn: schedule_message(conn, ctx, item, target, push_depth))
        elif kind == "spawn":
            module_id = items.first_tag(item, "Module") or ""
            if module_id and load_item(self.store.reader, module_id) is None:
                module = self.router.module(module_id)
                if module is not None:
                    self._ingest_module(items.parse_verified(module, self.settings.max_item_bytes))
            self.store.write(lambda conn: create_process(conn, ctx, item, push_depth))
            if parse_crons(item.tags):
                self._cron_processes.add(item.id)
        elif kind == "assignment":
            def place(conn: Any) -> None:
                if not queries.process_hosted(conn, target):
                    raise NotFound(f"process {target} is not hosted on this shard")
                store_item(conn, item, ItemKind.MESSAGE)
                if existing_slot(conn, target, item.id) is None:
                    assign(conn, ctx, target, item.id, push_depth)
            self.store.write(place)
        else:
            raise BadRequest(f"unknown pushed item kind {kind!r}")
        self._wake(target)

    def module_raw(self, module_id: str) -> bytes | None:
        """The raw Module item ``module_id`` if this shard stores it."""
        module = load_item(self.store.reader, module_id)
        return None if module is None or items.first_tag(module, "Type") != "Module" else \
            module.raw

    def _limit_outbox(self, actor: _Actor, s: ScheduledSlot, out: dict[str, Any]
                      ) -> dict[str, Any]:
        now = time.monotonic()
        opts = self.settings
        limited = limit_outbox(out, actor.process_id, s.push_depth > 0,
                               per_message=opts.max_outbox_messages,
                               room=actor.crank.room(now, opts.crank_window_seconds,
                                                     opts.max_crank_messages))
        actor.crank.record(now, limited.counted)
        if limited.refused:
            self.observer.outbox_refused(limited.reason, limited.refused)
            log.warning("process %s slot %d: %d outgoing messages not sent (%s)",
                        actor.process_id, s.slot, limited.refused, limited.reason)
        return limited.result

    def _checkpoint(self, actor: _Actor, slot: int, *, may_move: bool = False) -> None:
        """Checkpoint the instance at ``slot``; with ``may_move``, :class:`ProcessMoved`
        rather than a long wait for a worker another process's evaluation holds."""
        pid = actor.process_id
        name = hashlib.sha256(pid.encode()).hexdigest()[:16]
        started = time.perf_counter()
        try:
            ref = self.pool.checkpoint(pid, self.settings.checkpoint_dir / name / f"{slot}.ckpt",
                                       may_move=may_move)
        except ProcessMoved:
            raise  # not a failure: the instance is reopened elsewhere
        except Exception:
            self.observer.checkpoint_failed()
            raise
        try:
            crons = actor.cron_seq
            self.store.write(lambda conn: queries.insert_checkpoint(
                conn, pid, slot, ref.path, ref.sha256, ref.raw_size, ref.clock, crons))
            file_bytes = ref.path.stat().st_size
        except Exception:
            self.observer.checkpoint_failed()
            raise
        seconds = time.perf_counter() - started
        self.observer.checkpointed(ref.raw_size, file_bytes, seconds)
        log.info("%s", fields("checkpoint", process=pid, slot=slot, memory_bytes=ref.raw_size,
                              file_bytes=file_bytes, ms=seconds * 1000))
        actor.checkpointed(slot)
        self._prune_checkpoints(pid, slot)

    def _prune_checkpoints(self, pid: str, newest: int) -> None:
        """Forget all but the newest ``CHECKPOINTS_KEPT`` checkpoints of ``pid`` and delete
        their files (rows first: a crash in between leaves only unreferenced files)."""

        for file in self.store.write(
                lambda conn: queries.forget_checkpoints(conn, pid, newest, CHECKPOINTS_KEPT)):
            with contextlib.suppress(FileNotFoundError):
                Path(file).unlink()

    def checkpoint_now(self, process_id: str) -> int:
        """Checkpoint a process at its latest evaluated slot; returns that slot."""
        actor = self._actor(process_id)
        with actor.lock:
            if actor.next_slot == 0:
                raise BadRequest(f"process {process_id} has not evaluated anything yet")
            if actor.evicted:  # it was checkpointed at its latest slot when it was evicted
                return actor.checkpoint_at[0]
            self._checkpoint(actor, actor.next_slot - 1)
            return actor.next_slot - 1

    # --- memory budget (see appliance.node.residency) ------------------------------------------

    def _went_idle(self, actor: _Actor) -> None:
        """Book what ``actor``'s instance holds now that it stopped evaluating, then evict idle
        instances while the resident ones hold more than the budget."""
        if not actor.lock.acquire(blocking=False):
            return  # woken again: its new driver books it when it stops
        try:
            pid = actor.process_id
            if actor.broken is None and actor.generation == self.pool.generation(pid):
                with contextlib.suppress(EvaluationError):
                    self.residency.used(Kind.PROCESS, pid, self.pool.resident_bytes(pid))
        finally:
            actor.lock.release()
        self._keep_budget()

    def _keep_budget(self) -> None:
        if self.residency.over_budget():
            with self._budget_lock:
                for kind, pid in self.residency.victims():
                    if not self.residency.over_budget():
                        break
                    if kind is Kind.DRY_RUN:
                        self._evict_dry_copy(pid)
                    else:
                        self._evict(pid)

    def _moved(self, process_id: str) -> None:
        """The pool moved ``process_id`` off a worker another process's evaluation held."""
        self.observer.process_moved()
        log.info("%s", fields("process moved", process=process_id,
                              workers=self.pool.worker_count))

    def _retire(self, process_ids: list[str]) -> None:
        """Close the (idle) processes an unused extra worker hosts, so that it can stop."""
        with self._budget_lock:
            for pid in process_ids:
                self._evict(pid, reason="extra worker stopping")

    def _evict(self, process_id: str, *, reason: str = "memory budget") -> None:
        """Close ``process_id``'s instance if it is idle, checkpointing it first when it
        evaluated past its newest checkpoint; a busy one is left for later."""
        with self._actors_lock:
            actor = self._actors.get(process_id)
        if actor is None or not actor.lock.acquire(blocking=False):
            return
        try:
            with self._actors_lock:
                if actor.running:
                    return
            if actor.generation != self.pool.generation(process_id):
                self.residency.gone(Kind.PROCESS, process_id, evicted=False)  # already gone
                return
            wrote = actor.broken is None and actor.ahead_of_checkpoint()
            if wrote:  # a broken actor is never reopened: its state is not worth keeping
                try:
                    self._checkpoint(actor, actor.next_slot - 1, may_move=True)
                except ProcessMoved:  # its worker is busy: it moved, its instance is dropped
                    wrote = False
            self.pool.close(process_id)
            nbytes = self.residency.gone(Kind.PROCESS, process_id,
                                         evicted=actor.broken is None)
            actor.mark_evicted()
            self.observer.instance_evicted(nbytes, wrote)
            log.info("%s", fields("process evicted", process=process_id, bytes=nbytes,
                                  checkpointed=wrote, reason=reason))
        except Exception as exc:  # noqa: BLE001 - stays resident; the next idle retries
            log.warning("process %s: cannot evict (%s); it stays resident", process_id, exc)
        finally:
            actor.lock.release()

    def _actor(self, process_id: str) -> _Actor:
        if not queries.process_hosted(self.store.reader, process_id):
            raise NotFound(f"process {process_id} is not hosted on this node")
        with self._actors_lock:
            actor = self._actors.get(process_id)
            if actor is None:
                actor = self._actors[process_id] = _Actor(process_id)
        return actor

    # --- reads -------------------------------------------------------------------------------

    def result_now(self, process_id: str, message_id: str) -> tuple[int, dict[str, Any] | None]:
        """(slot, result JSON) of ``message_id``, or (slot, None) while it is not computed yet.

        NotFound when the message is not scheduled on the process; EvaluationError when the
        process stopped evaluating. Never waits: waiting readers use a progress listener.
        """
        found = queries.existing_slot(self.store.reader, process_id, message_id)
        if found is None:
            raise NotFound(f"message {message_id} is not scheduled on process {process_id}")
        slot = found
        done = stored_result(self.store.reader, process_id, slot)
        if done is not None:
            value: dict[str, Any] = json.loads(done[1])
            return slot, value
        actor = self._actors.get(process_id)
        if actor is not None and actor.broken:
            raise EvaluationError(f"process {process_id} cannot evaluate: {actor.broken}")
        return slot, None

    def result(self, process_id: str, message_id: str, wait: bool = True) -> dict[str, Any]:
        """The result JSON of ``message_id`` in ``process_id``, waiting (on this thread) for
        evaluation up to ``result_wait_seconds``."""
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
        """The raw signed Result item of ``message_id``."""
        self.result(process_id, message_id)
        return self.result_row(process_id, message_id).raw

    def schedule_items(self, process_id: str, first: int,
                       last: int) -> list[tuple[int, bytes, bytes]]:
        """(slot, raw message item, raw assignment item) of the slots ``first..last``."""
        return queries.schedule_items(self.store.reader, process_id, first, last)

    def result_items(self, process_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """(slot, raw signed Result item) of the stored results in slots ``first..last``."""
        return queries.result_items(self.store.reader, process_id, first, last)

    def dry_run(self, process_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """Evaluate ``message`` against the process's latest state without keeping anything.

        It runs on a copy of the process in a dry-run worker, under the dry-run limits, so it
        never holds the process's actor or worker while the guest runs; at most
        ``dry_run_concurrency`` run at once (Overloaded past that).
        """
        with self._dry_gate.held_for():
            actor = self._actor(process_id)
            self.tick_crons(process_id)  # the CU dry-runs on the state evaluated up to now
            msg = {"Id": "dry-run", "Owner": message.get("Owner", ""),
                   "From": message.get("From") or message.get("Owner", ""),
                   "Target": process_id, "Tags": message.get("Tags", []),
                   "Data": message.get("Data", ""), "Anchor": message.get("Anchor", "0"),
                   "Timestamp": int(time.time() * 1000), "Block-Height": self.settings.block_height,
                   "Cron": False, "Read-Only": True}
            with self._dry_lock:
                copy = self._dry_copies.get(process_id) or _DryCopy()
                self._dry_copies[process_id] = copy
                self._dry_copies.move_to_end(process_id)
                pool = self._dry_pool = self._dry_pool or EvaluatorPool(
                    self.settings.dry_run_concurrency, self.settings.cache_dir)
            with copy.lock:
                env_json = self._load_dry_copy(actor, copy, pool)
                result = pool.dry_run(process_id, jsjson.stringify(msg), env_json)
            self._evict_dry_copies(pool)
            self._keep_budget()
            return result

    def _load_dry_copy(self, actor: _Actor, copy: _DryCopy, pool: EvaluatorPool) -> bytes:
        """Bring the dry-run copy of ``actor``'s process to its latest evaluated slot. The
        actor's lock is held only to snapshot its memory between batches, never while a guest
        runs in the dry-run worker."""
        pid = actor.process_id
        path = self._dry_image(pid)
        with actor.lock:
            if actor.broken is not None:
                raise EvaluationError(f"process {pid} cannot evaluate: {actor.broken}")
            if actor.generation != self.pool.generation(pid):
                self._open(actor)
            slot, env_json = actor.next_slot - 1, actor.env_json
            wanted = (slot, actor.cron_seq, pool.generation(pid))
            if copy.loaded == wanted:
                return env_json
            snapshot = self.pool.checkpoint(pid, path) if slot >= 0 else None
            limits = replace(actor.limits,
                             fuel=min(actor.limits.fuel, self.settings.dry_run_fuel),
                             wall_clock_seconds=min(actor.limits.wall_clock_seconds,
                                                    self.settings.dry_run_wall_clock_seconds))
            module_path, fmt = actor.module_path, actor.module_format
        copy.loaded = None
        report = pool.open(pid, module_path, fmt, limits, snapshot)
        copy.loaded = wanted
        self.residency.used(Kind.DRY_RUN, pid, report.resident_bytes)
        return env_json

    def _evict_dry_copies(self, pool: EvaluatorPool) -> None:
        with self._dry_lock:
            idle = [(pid, copy) for pid, copy in self._dry_copies.items()
                    if not copy.lock.locked()]
            excess = len(self._dry_copies) - DRY_RUN_RESIDENT
            for pid, copy in idle[:max(0, excess)]:
                self._drop_dry_copy(pid, copy, pool)

    def _evict_dry_copy(self, process_id: str) -> None:
        """Close the dry-run copy of ``process_id`` to stay within the memory budget, unless a
        dry-run is using it (it is rebuilt from a fresh image by the next dry-run)."""
        with self._dry_lock:
            copy = self._dry_copies.get(process_id)
            if copy is None or self._dry_pool is None:
                self.residency.gone(Kind.DRY_RUN, process_id, evicted=False)
            elif not copy.lock.locked():
                self._drop_dry_copy(process_id, copy, self._dry_pool)

    def _drop_dry_copy(self, pid: str, copy: _DryCopy, pool: EvaluatorPool) -> None:
        """Forget a dry-run copy and close it (``_dry_lock`` held)."""
        del self._dry_copies[pid]
        if copy.loaded is not None:
            with contextlib.suppress(ApplianceError):
                pool.close(pid)
        self.residency.gone(Kind.DRY_RUN, pid, evicted=False)
        with contextlib.suppress(FileNotFoundError):
            self._dry_image(pid).unlink()

    def _dry_image(self, process_id: str) -> Path:
        """Where the memory image a dry-run copy of ``process_id`` restores from is written."""
        name = hashlib.sha256(process_id.encode()).hexdigest()[:16]
        return self.settings.data_dir / "dry-run" / f"{name}.img"

    def scheduled(self, process_id: str, message_id: str) -> tuple[items.Item, items.Item]:
        """(message item, assignment item) for a message scheduled on ``process_id``."""
        row = queries.slot_of(self.store.reader, process_id, message_id)
        if row is None:
            raise NotFound(f"message {message_id} is not scheduled on process {process_id}")
        return self._pair(row.message_id, row.assignment_id)

    def _pair(self, message_id: str, assignment_id: str) -> tuple[items.Item, items.Item]:
        reader = self.store.reader
        message, assignment = load_item(reader, message_id), load_item(reader, assignment_id)
        if message is None or assignment is None:
            raise NotFound(f"message {message_id} is missing from the store")
        return message, assignment

    def schedule_page(self, process_id: str, *, from_ms: int | None = None,
                      to_ms: int | None = None, from_slot: int | None = None,
                      to_slot: int | None = None,
                      limit: int = 100) -> tuple[list[ScheduledEntry], bool]:
        """A page of the schedule, ordered by slot: ``from`` bounds exclusive, ``to`` inclusive."""
        self._actor(process_id)
        rows = queries.schedule_page(self.store.reader, process_id, from_ms=from_ms, to_ms=to_ms,
                                     from_slot=from_slot, to_slot=to_slot, limit=limit + 1)
        page = rows[:limit]
        return [(s, *self._pair(s.message_id, s.assignment_id)) for s in page], len(rows) > limit

    def process_info(self, process_id: str) -> tuple[items.Item, ScheduledSlot, items.Item]:
        """(process item, its slot 0, slot-0 assignment)."""
        page, _ = self.schedule_page(process_id, from_slot=0, to_slot=0, limit=1)
        if not page:
            raise NotFound(f"process {process_id} is not hosted on this node")
        slot, process, assignment = page[0]
        return process, slot, assignment

    def results_page(self, process_id: str, *, after_slot: int | None, before_slot: int | None,
                     descending: bool, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Stored results as (slot, result JSON), ascending or descending by slot."""
        self._actor(process_id)
        low = -1 if after_slot is None else after_slot
        high = 2**62 if before_slot is None else before_slot
        rows = queries.results_page(self.store.reader, process_id, low, high, descending, limit)
        return [(slot, json.loads(data)) for slot, data in rows]

    def item_raw(self, item_id: str) -> bytes:
        """Raw bytes of any item the node holds."""
        raw = queries.item_raw(self.store.reader, item_id)
        if raw is None:
            raise NotFound(f"item {item_id} is not stored on this node")
        return raw

    def item_data(self, item_id: str) -> tuple[bytes, str]:
        """(data bytes, content type) of any item the node holds; the type is the item's
        ``Content-Type`` tag, or ``application/octet-stream``."""
        item = items.parse_unverified(self.item_raw(item_id))
        return item.data, items.first_tag(item, "Content-Type") or "application/octet-stream"

    def find_items(self, *, ids: list[str] | None = None, owners: list[str] | None = None,
                   recipients: list[str] | None = None,
                   tags: list[tuple[str, list[str], bool]] | None = None,
                   after_row: int | None = None, ascending: bool = False,
                   limit: int = 10) -> list[tuple[int, bytes]]:
        """(row cursor, raw item) of stored items matching every given filter."""
        return queries.find_items(self.store.reader, ids=ids, owners=owners,
                                  recipients=recipients, tags=tags, after_row=after_row,
                                  ascending=ascending, limit=limit)

    def state(self, process_id: str) -> tuple[int, bytes]:
        """(slot, raw memory after that slot) from the process's newest checkpoint.

        A new checkpoint is written only when the process evaluated past the newest one and
        the last one forced here is at least ``state_checkpoint_seconds`` old; otherwise the
        newest checkpoint is served as it is (its slot says how current it is).
        """
        actor = self._actor(process_id)
        with actor.lock:
            row = queries.latest_checkpoint(self.store.reader, process_id)
            now = time.monotonic()
            latest = actor.next_slot - 1 if actor.generation is not None else -1
            due = (actor.state_forced_at is None
                   or now - actor.state_forced_at >= self.settings.state_checkpoint_seconds)
            if latest >= 0 and (row is None or (row.slot < latest and due)):
                self._checkpoint(actor, latest)
                actor.state_forced_at = now
                row = queries.checkpoint_at(self.store.reader, process_id, latest)
            if row is None:
                raise BadRequest(f"process {process_id} has not evaluated anything yet")
            slot = row.slot
            ref = CheckpointFile(row.file, row.sha256, row.raw_size, row.clock)
        return slot, read_checkpoint(ref).memory

    def result_row(self, process_id: str, message_id: str) -> queries.ResultRow:
        """The stored result of ``message_id`` with its signed item (NotFound before it is)."""
        row = queries.result_of(self.store.reader, process_id, message_id)
        if row is None:
            raise NotFound(f"no result item for {message_id}")
        return row

    def results_from(self, process_id: str, from_slot: int,
                     limit: int) -> list[queries.ResultRow]:
        """Up to ``limit`` stored results of a hosted process from ``from_slot`` on, by slot."""
        if not queries.process_hosted(self.store.reader, process_id):
            raise NotFound(f"process {process_id} is not hosted on this node")
        return queries.results_from(self.store.reader, process_id, from_slot, limit)

    def process_page(self, after: int, limit: int) -> list[queries.ProcessRow]:
        """Hosted processes in creation order after cursor ``after`` (0: from the first)."""
        return queries.process_page(self.store.reader, after, limit)

    def process_ids(self) -> list[str]:
        """Every process this shard holds."""
        return queries.process_ids(self.store.reader)

    def item_created_ms(self, item_id: str) -> int | None:
        """When this shard stored ``item_id`` (ms since the epoch); None if it holds none."""
        return queries.item_created_ms(self.store.reader, item_id)

    def outbox_by_status(self) -> dict[str, int]:
        """Outbox entry counts keyed by status."""
        return queries.outbox_by_status(self.store.reader)

    def outbox_failures(self, limit: int) -> list[tuple[str, str, str, str]]:
        """(row key, target, status, reason) of the newest undelivered outbox items."""
        return queries.outbox_failures(self.store.reader, limit)

    def checkpoint_digest(self, process_id: str, slot: int) -> tuple[str, int]:
        """(memory SHA-256 hex, memory size) of the checkpoint of ``process_id`` at ``slot``;
        the SHA-256 is computed from the file and recorded the first time it is asked for."""
        row = queries.checkpoint_at(self.store.reader, process_id, slot)
        if row is None:
            raise NotFound(f"no checkpoint of {process_id} at slot {slot}")
        ref = CheckpointFile(row.file, row.sha256, row.raw_size, row.clock)
        sha256 = checkpoint_sha256(ref)
        if not ref.sha256:
            self.store.write(
                lambda conn: queries.set_checkpoint_sha256(conn, process_id, slot, sha256))
        return sha256, ref.raw_size

    def memory(self) -> tuple[Tally, int]:
        """Resident and evicted instances and their bytes, and this shard's memory budget."""
        return self.residency.tally(), self.residency.budget_bytes

    def broken_count(self) -> int:
        """How many hosted processes stopped evaluating (see the log for why) since start."""
        with self._actors_lock:
            return sum(1 for actor in self._actors.values() if actor.broken is not None)

    def status(self) -> dict[str, Any]:
        """Counters for health and operator status."""
        processes, pending, outbox = queries.counts(self.store.reader)
        return {"address": self.identity.address, "attestation": self.attestation_id,
                "processes": processes, "schedule_backlog": pending, "outbox_pending": outbox}



__all__ = ["ApplianceError", "ComputeLimits", "NodeSettings", "Receipt", "Shard"]
