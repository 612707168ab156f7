"""Process actors' wasm runs in worker processes, each single-threaded.

Why processes, not threads: evaluation is CPU-bound wasm, and wasmtime-py hands a host
function's exception back through one module-global slot, which concurrent guests that longjmp
(every Lua error does) could race on. A worker owns the resident instances of the processes
placed on it and evaluates their batches serially; the parent keeps I/O, signing and the store.
A crash of a worker (say, a runtime fault) costs only a respawn and a replay from checkpoint.

Isolation: a process whose call would wait behind another process's evaluation for longer than
the pool's ``move_after`` seconds moves to an idle worker, preferably one already running (a
spare is kept started for that; at most as many extras as base workers; an extra idle for
``extra_idle_seconds`` is stopped, but for one spare), and is reopened there from its checkpoint,
as after a crash. A message that runs to its limit then delays only its own process.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import multiprocessing
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

import wasmtime

from appliance.compute import (
    ComputeEngine,
    ComputeLimits,
    LoadedModule,
    ProcessInstance,
    Snapshot,
    module_format,
)
from appliance.compute.image import MemoryImage, write_image
from appliance.errors import ApplianceError, EvaluationError, ModuleError

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint on disk as the store records it: the file, the raw memory's SHA-256 (hex;
    empty until asked for, see :func:`checkpoint_sha256`), its size and the clock counter. The
    file is a memory image (``appliance.compute.image``); earlier versions wrote gzip of the raw
    memory, which is still read."""

    path: Path
    sha256: str
    raw_size: int
    clock: int


def write_checkpoint(snapshot: Snapshot, path: Path) -> CheckpointFile:
    """Write ``snapshot`` atomically as a memory image and return its description."""
    info = write_image(snapshot.memory, snapshot.clock, path)
    return CheckpointFile(path, "", info.raw_size, info.clock)


def checkpoint_instance(instance: ProcessInstance, path: Path) -> CheckpointFile:
    """Write ``instance``'s current state atomically as a memory image (no memory copy)."""
    info = instance.write_image(path)
    return CheckpointFile(path, "", info.raw_size, info.clock)


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(2) == _GZIP_MAGIC
    except OSError as exc:
        raise EvaluationError(f"checkpoint {path} is unreadable: {exc.strerror}") from None


def _read_gzip(ref: CheckpointFile) -> Snapshot:
    try:
        memory = gzip.decompress(ref.path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise EvaluationError(f"checkpoint {ref.path} is unreadable: {exc}") from None
    snapshot = Snapshot(memory, ref.clock)
    if hashlib.sha256(memory).hexdigest() != ref.sha256:
        raise EvaluationError(f"checkpoint {ref.path} does not match its SHA-256")
    return snapshot


def _open_image(ref: CheckpointFile, memory_limit: int) -> MemoryImage:
    """Open the image ``ref`` names; refuse it unless its header matches the store's record."""
    image = MemoryImage(ref.path, memory_limit)
    recorded = (ref.raw_size, ref.clock)
    held = (image.raw_size, image.clock)
    if held != recorded:
        image.close()
        fields = [name for name, a, b in zip(("raw size", "clock"), held, recorded,
                                             strict=True) if a != b]
        raise EvaluationError(f"checkpoint {ref.path} does not match the store's record "
                              f"({', '.join(fields)} differ)")
    return image


def read_checkpoint(ref: CheckpointFile) -> Snapshot:
    """Load a checkpoint's full raw memory, checked against the store's record."""
    if _is_gzip(ref.path):
        return _read_gzip(ref)
    image = _open_image(ref, ref.raw_size)
    try:
        return Snapshot(image.read(), image.clock)
    finally:
        image.close()


def checkpoint_sha256(ref: CheckpointFile) -> str:
    """The checkpointed memory's SHA-256 (hex): recorded for gzip files, computed from the
    file (and its BLAKE3 checked) for images."""
    if ref.sha256:
        return ref.sha256
    image = _open_image(ref, ref.raw_size)
    try:
        return image.memory_sha256()
    finally:
        image.close()


def restore_checkpoint(engine: ComputeEngine, loaded: LoadedModule, limits: ComputeLimits,
                       ref: CheckpointFile) -> ProcessInstance:
    """A resident instance restored from ``ref`` (an image is read straight into its memory)."""
    if _is_gzip(ref.path):
        return engine.instantiate(loaded, limits, _read_gzip(ref))
    image = _open_image(ref, limits.memory_bytes)
    try:
        return engine.instantiate(loaded, limits, image)
    except BaseException:
        image.close()
        raise


@dataclass(frozen=True)
class OpenReport:
    """How opening a process in its worker went (for the node's log)."""

    compiled: bool
    """The module was compiled from wasm (not loaded from the native-code cache or memory)."""
    load_seconds: float
    instantiate_seconds: float
    """Instantiating, or restoring the checkpoint."""
    resident_bytes: int = 0
    """RAM the instance holds once open (see :meth:`ProcessInstance.resident_bytes`)."""


class _NotOpen(EvaluationError):
    """The worker holds no instance of the process (it moved, or the worker was restarted)."""


class _Worker:
    """The worker side: resident instances keyed by process id."""

    def __init__(self, cache_dir: Path) -> None:
        self.engine = ComputeEngine(cache_dir)
        self.instances: dict[str, ProcessInstance] = {}

    def _instance(self, process_id: str) -> ProcessInstance:
        instance = self.instances.get(process_id)
        if instance is None:
            raise _NotOpen(f"process {process_id} is not open in this worker")
        return instance

    def open(self, process_id: str, module_path: str, fmt: str, limits: ComputeLimits,
             checkpoint: CheckpointFile | None) -> OpenReport:
        started, compiled = time.perf_counter(), self.engine.compiled
        loaded = self.engine.load(Path(module_path).read_bytes(), module_format(fmt))
        loaded_at = time.perf_counter()
        instance = (self.engine.instantiate(loaded, limits) if checkpoint is None
                    else restore_checkpoint(self.engine, loaded, limits, checkpoint))
        self.close(process_id)
        self.instances[process_id] = instance
        return OpenReport(self.engine.compiled > compiled, loaded_at - started,
                          time.perf_counter() - loaded_at, instance.resident_bytes())

    def resident_bytes(self, process_id: str) -> int:
        return self._instance(process_id).resident_bytes()

    def evaluate(self, process_id: str, batch: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        inst = self._instance(process_id)
        return [inst.handle_json(msg, env).as_json() for msg, env in batch]

    def dry_run(self, process_id: str, msg: bytes, env: bytes) -> dict[str, Any]:
        return self._instance(process_id).dry_run_json(msg, env).as_json()

    def checkpoint(self, process_id: str, path: str) -> CheckpointFile:
        return checkpoint_instance(self._instance(process_id), Path(path))

    def validate(self, wasm: bytes) -> None:
        if wasm[:4] != b"\0asm":
            raise ModuleError(f"the Module's data is not a wasm binary: it starts with "
                              f"{wasm[:8]!r}, not the wasm magic b'\\x00asm'")
        try:
            wasmtime.Module.validate(self.engine.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            text = " ".join(str(exc).split())
            raise ModuleError(f"invalid wasm module: {text[:300]}") from None

    def close(self, process_id: str) -> None:
        instance = self.instances.pop(process_id, None)
        if instance is not None:
            instance.close()


_READY = "ready"
"""What a worker sends once it can serve requests, before any reply."""


def _serve(conn: Connection, cache_dir: Path) -> None:
    worker = _Worker(cache_dir)
    try:
        conn.send(_READY)
    except (BrokenPipeError, EOFError, OSError):
        return
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        method, args, closes = request
        for process_id in closes:  # instances of processes that moved away meanwhile
            worker.close(process_id)
        try:
            reply: tuple[bool, Any] = (True, getattr(worker, method)(*args))
        except ApplianceError as exc:
            reply = (False, (type(exc).__name__, str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, never fatal here
            reply = (False, ("EvaluationError", f"{type(exc).__name__}: {exc}"))
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError, OSError):
            return  # the node went away (for example kill -9); nothing left to answer


_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
         "from appliance.node.evaluator import _worker_main; _worker_main()")
"""A worker's whole start-up: the parent's import path, then this module alone. Not
multiprocessing's spawn, which would also import the parent's main module in every worker
(``appliance.cli`` behind the ``ao-appliance`` script: 0.9 s of CPU and 60 MB more RSS)."""


def _worker_main() -> None:
    """The worker process's entry (see :data:`_BOOT`): serve the connection whose descriptor
    and cache directory the parent passed."""
    _serve(Connection(int(sys.argv[2])), Path(sys.argv[3]))


class _WorkerProcess:
    """One worker interpreter started with :data:`_BOOT`, serving the other end of ``conn``
    (``multiprocessing.Process``'s ``pid``/``join``/``is_alive``/``kill``)."""

    def __init__(self, child: Connection, cache_dir: Path) -> None:
        fd = child.fileno()
        self._popen = subprocess.Popen(
            [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(fd), str(cache_dir)],
            pass_fds=(fd,), stdin=subprocess.DEVNULL)
        self.pid = self._popen.pid

    def join(self, timeout: float | None = None) -> None:
        """Wait for it to exit (at most ``timeout`` seconds)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.kill()


class WorkerCrashed(EvaluationError):
    """A worker process died; its processes must be reopened from their checkpoints."""


class ProcessMoved(EvaluationError):
    """The worker the pool now places the process on holds no instance of it: it moved away
    from a worker another process's evaluation held (or its extra worker was stopped, or
    restarted). Reopen it from its checkpoint; nothing of it was lost but evaluated work."""


class PendingCall:
    """A request sent to a worker whose reply has not been read yet (the worker stays held)."""

    def __init__(self, handle: _WorkerHandle) -> None:
        self._handle: _WorkerHandle | None = handle

    def result(self) -> Any:
        """The reply (raises what :meth:`_WorkerHandle.call` raises); exactly once."""
        handle, self._handle = self._handle, None
        if handle is None:
            raise RuntimeError("worker reply already taken")
        return handle.finish()


class _WorkerHandle:
    """The parent's side of one worker process. ``lock`` is held from a request until its
    reply is read; ``holder``/``held_since`` say by which process and since when (``None``
    while free or just taken). ``hosted`` and ``retired`` are guarded by the pool's placement
    lock, ``stale`` (instances to close before the next request) by ``mutex``. The worker's
    :data:`_READY` is read before its first reply; with ``boot_held``, by a thread of its own
    that holds ``lock`` (``booting``) until then, so that a started worker looks busy, not idle,
    until it can serve. ``on_free`` is called whenever ``lock`` is let go."""

    def __init__(self, cache_dir: Path, generations: Callable[[], int], *,
                 extra: bool = False, boot_held: bool = False,
                 on_free: Callable[[], None] = lambda: None) -> None:
        self._cache_dir, self._generations, self._on_free = cache_dir, generations, on_free
        self.extra = extra
        self.lock = threading.Lock()
        self.booting = False
        self._ready = False
        self.mutex = threading.Lock()
        self.stale: set[str] = set()
        self.holder = ""
        self.held_since: float | None = None
        self.last_used = time.monotonic()
        self.hosted = 0
        self.retired = False
        if boot_held:
            self.lock.acquire()
            self.booting = True
        self._start()
        if boot_held:
            threading.Thread(target=self._boot, name="evaluator-boot", daemon=True).start()

    def _boot(self) -> None:
        try:
            with contextlib.suppress(WorkerCrashed):  # the next request restarts it
                self._read_ready()
        finally:
            self.booting = False
            self.release()

    def _read_ready(self) -> None:
        """Read the worker's :data:`_READY` unless read already (``lock`` held)."""
        if self._ready:
            return
        try:
            ready = self.conn.recv()
        except (EOFError, OSError):
            raise WorkerCrashed("evaluation worker died while starting") from None
        if ready != _READY:
            raise WorkerCrashed(f"evaluation worker started with {ready!r}")
        self._ready = True

    def _start(self) -> None:
        parent, child = multiprocessing.Pipe()
        self.conn: Connection = parent
        try:
            self.proc = _WorkerProcess(child, self._cache_dir)
        finally:
            child.close()
        self._ready = False
        with self.mutex:
            self.stale.clear()  # a new worker process holds no instance
        self.generation = self._generations()

    def _wait(self, holder: str, patience: float) -> float:
        since = self.held_since
        if since is None or self.holder == holder:
            return patience
        return max(0.0, since + patience - time.monotonic())

    def busy(self, patience: float | None) -> bool:
        """Held by one call for at least ``patience`` seconds now."""
        since = self.held_since
        return patience is not None and since is not None \
            and time.monotonic() - since >= patience

    def take(self, holder: str, patience: float | None) -> bool:
        """Hold the worker for ``holder`` (a process id); with a ``patience``, give up (False)
        once another holder has held it that long."""
        if patience is None:
            self.lock.acquire()
        else:
            while not self.lock.acquire(timeout=self._wait(holder, patience)):
                if self.holder != holder and self.busy(patience):
                    return False
        self.held(holder)
        return True

    def held(self, holder: str) -> None:
        """Record that ``holder`` just took ``lock``."""
        self.holder, self.held_since = holder, time.monotonic()

    def release(self) -> None:
        """Let the next caller have the worker."""
        self.holder, self.held_since = "", None
        self.last_used = time.monotonic()
        self.lock.release()
        self._on_free()

    def call(self, method: str, *args: Any) -> Any:
        """Send a request and wait for its reply (``lock`` held by the caller; released)."""
        return self.begin(method, *args).result()

    def begin(self, method: str, *args: Any) -> PendingCall:
        """Send a request (``lock`` held by the caller) and keep the worker held until
        :meth:`PendingCall.result` is taken."""
        with self.mutex:
            closes, self.stale = sorted(self.stale), set()
        try:
            self._read_ready()
            self.conn.send((method, args, closes))
        except (EOFError, OSError, BrokenPipeError, WorkerCrashed):
            self._crashed()
        except BaseException:
            self.release()
            raise
        return PendingCall(self)

    def finish(self) -> Any:
        try:
            ok, value = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._crashed()
        except BaseException:
            self.release()
            raise
        self.release()
        if not ok:
            kind, message = value
            if kind == "ModuleError":
                raise ModuleError(message)
            if kind == _NotOpen.__name__:
                raise ProcessMoved(f"{message}; reopening it")
            raise EvaluationError(message)
        return value

    def _crashed(self) -> NoReturn:
        try:
            self.proc.join(timeout=1)
            self._start()
        finally:
            self.release()
        raise WorkerCrashed("evaluation worker died; processes will be reopened") from None

    def stop_held(self) -> None:
        """Stop the worker process (``lock`` held by the caller; kept)."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)

    def stop(self) -> None:
        with self.lock:
            self.stop_held()


MOVE_AFTER_SECONDS = 0.5
"""Default patience before a process moves off a worker another process's call holds."""
EXTRA_IDLE_SECONDS = 60.0
"""An extra worker unused this long is emptied (``on_retire``) and stopped, but for the spare."""


class EvaluatorPool:
    """Process → worker routing over worker processes.

    A process stays on the worker it was placed on (a base worker not held long, hosting the
    fewest processes). With ``move_after`` set, a call that would wait longer than that for a
    worker another process's call holds moves the process instead: to an idle worker (a
    regular one before the spare). With moves on, the pool keeps a *spare*: an extra worker
    started and hosting nothing (started with the pool, and again when a move takes it). When
    no worker is idle, an extra one is started (at most ``workers`` extras, the spare
    included), and the process goes to the first worker let go or started. ``open`` just runs
    there; the other calls raise :class:`ProcessMoved`, and the caller reopens the process from
    its checkpoint. ``on_move(process_id)`` is called for every move. An extra worker unused
    for ``extra_idle_seconds`` is stopped once it hosts nothing, unless it is the last spare:
    ``on_retire(process_ids)`` (from the pool's own thread; must not raise) is asked to close
    what it hosts, and processes it leaves open keep the worker running until the next look.
    """

    def __init__(self, workers: int, cache_dir: Path, *, move_after: float | None = None,
                 extra_idle_seconds: float = EXTRA_IDLE_SECONDS,
                 on_move: Callable[[str], None] | None = None,
                 on_retire: Callable[[list[str]], None] | None = None) -> None:
        self._cache_dir = cache_dir
        self._generation = itertools.count().__next__
        self._base = max(1, workers)
        self._freed = threading.Condition()
        self._frees = 0  # how many times a worker was let go (under _freed)
        self._workers = [_WorkerHandle(cache_dir, self._generation, on_free=self._free)
                         for _ in range(self._base)]
        self._placement: dict[str, _WorkerHandle] = {}
        self._placing = threading.Lock()
        self._move_after = move_after
        self._extra_idle = extra_idle_seconds
        self._on_move = on_move
        self._on_retire = on_retire
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        with self._placing:
            self._replenish()

    @property
    def worker_count(self) -> int:
        """Worker processes running now (base and extra)."""
        with self._placing:
            return len(self._workers)

    def held_workers(self) -> int:
        """Workers serving a call right now."""
        with self._placing:
            return sum(h.lock.locked() and not h.booting for h in self._workers)

    def _free(self) -> None:
        with self._freed:
            self._frees += 1
            self._freed.notify_all()

    def _wait_free(self, frees: int, timeout: float) -> None:
        """Wait until a worker was let go since the count was ``frees`` (at most ``timeout``)."""
        with self._freed:
            self._freed.wait_for(lambda: self._frees != frees, timeout=timeout)

    def _extra(self) -> None:
        """Start an extra worker, held until it can serve (under ``_placing``)."""
        self._workers.append(_WorkerHandle(self._cache_dir, self._generation, extra=True,
                                           boot_held=True, on_free=self._free))
        self._start_reaper()

    def _spare(self, handle: _WorkerHandle) -> bool:
        """An extra worker hosting no process (under ``_placing``)."""
        return handle.extra and not handle.hosted

    def _replenish(self) -> None:
        """With moves on, start a spare (an extra worker placed nothing yet, so that the next
        move finds a running worker) unless one exists or the extras are at their limit
        (under ``_placing``)."""
        if self._move_after is None or len(self._workers) >= 2 * self._base \
                or any(self._spare(h) for h in self._workers):
            return
        self._extra()

    def _for(self, process_id: str) -> _WorkerHandle:
        with self._placing:
            handle = self._placement.get(process_id)
            if handle is None:
                handle = min(self._workers[:self._base],
                             key=lambda h: (h.busy(self._move_after), h.hosted))
                self._placement[process_id] = handle
                handle.hosted += 1
                with handle.mutex:
                    handle.stale.discard(process_id)
        return handle

    def _held(self, process_id: str, *, move: bool, reopen: bool) -> _WorkerHandle:
        """The worker hosting ``process_id``, held for it. With ``move`` (and a patience),
        the process moves when that worker stays held by another; with ``reopen`` the move
        raises :class:`ProcessMoved` (the instance stayed behind), else the new worker is
        returned held."""
        patience = self._move_after if move else None
        may_start = True  # an extra worker, once, when no worker is idle
        while True:
            handle = self._for(process_id)
            with self._freed:
                frees = self._frees
            if not handle.take(process_id, patience):
                assert patience is not None
                target = self._move(process_id, handle, may_start=may_start)
                if target is not None:
                    if not reopen:
                        return target
                    target.release()
                    raise ProcessMoved(f"process {process_id} moved to another worker; "
                                       f"reopening it there")
                with self._placing:
                    if self._placement.get(process_id) is not handle:
                        continue
                # nowhere to go yet: look again once a worker is let go or has started
                may_start = False
                self._wait_free(frees, patience)
                continue
            if not handle.retired:
                return handle
            handle.release()

    def _move(self, process_id: str, old: _WorkerHandle, *, may_start: bool
              ) -> _WorkerHandle | None:
        """Place ``process_id`` on an idle worker and return it held; ``None`` when every worker
        is busy (with ``may_start``, an extra one is started then if the limit allows: the
        first worker let go or started takes the process, so a move never waits on a starting
        worker while another frees up)."""
        with self._placing:
            if self._placement.get(process_id) is not old:
                return None
            idle = sorted((h for h in self._workers if h is not old and not h.lock.locked()),
                          key=lambda h: (self._spare(h), h.hosted))
            target = next((h for h in idle if h.lock.acquire(blocking=False)), None)
            if target is None:
                if may_start and len(self._workers) < 2 * self._base:
                    self._extra()
                return None
            target.held(process_id)
            old.hosted -= 1
            target.hosted += 1
            self._placement[process_id] = target
            with old.mutex:
                old.stale.add(process_id)  # closed before old's next request
            with target.mutex:
                target.stale.discard(process_id)
            self._replenish()
        if self._on_move is not None:
            self._on_move(process_id)
        return target

    def _start_reaper(self) -> None:
        if self._reaper is None:  # under _placing
            self._reaper = threading.Thread(target=self._reap, name="evaluator-reaper",
                                            daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Stop extra workers unused for ``extra_idle_seconds``: first ``on_retire`` is asked
        to close the processes they host (checkpointing them), then an empty one stops."""
        while not self._stopping.wait(min(self._extra_idle / 2, 5.0)):
            with self._placing:
                extras = [h for h in self._workers if h.extra]
            for handle in extras:
                if handle.lock.locked() or time.monotonic() - handle.last_used < self._extra_idle:
                    continue
                with self._placing:
                    if self._last_spare(handle):
                        continue
                    hosted = [pid for pid, h in self._placement.items() if h is handle]
                if hosted and self._on_retire is not None:
                    self._on_retire(hosted)
                if not handle.lock.acquire(blocking=False):
                    continue
                try:
                    with self._placing:
                        if handle.hosted or self._last_spare(handle):
                            continue
                        handle.retired = True
                        self._workers.remove(handle)
                    handle.stop_held()
                finally:
                    handle.lock.release()  # not release(): that would count as a use
                    self._free()

    def _last_spare(self, handle: _WorkerHandle) -> bool:
        """``handle`` is the spare the pool keeps: moves are on, it hosts nothing and no other
        extra is spare (under ``_placing``)."""
        return self._move_after is not None and self._spare(handle) and not any(
            self._spare(h) for h in self._workers if h is not handle)

    def generation(self, process_id: str) -> int:
        """Changes whenever the worker hosting ``process_id`` was restarted or changed."""
        return self._for(process_id).generation

    def open(self, process_id: str, module_path: Path, fmt: str, limits: ComputeLimits,
             checkpoint: CheckpointFile | None) -> OpenReport:
        """Instantiate (or restore) a process in its worker (moving it first if that worker
        is held by another process's call past ``move_after``)."""
        report: OpenReport = self._held(process_id, move=True, reopen=False).call(
            "open", process_id, str(module_path), fmt, limits, checkpoint)
        return report

    def evaluate(self, process_id: str, batch: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        """Evaluate messages in order; one result object per message (:class:`ProcessMoved`
        if the process had to move)."""
        result: list[dict[str, Any]] = self.begin_evaluate(process_id, batch).result()
        return result

    def begin_evaluate(self, process_id: str, batch: list[tuple[bytes, bytes]]) -> PendingCall:
        """Start :meth:`evaluate`; its ``result()`` is the list of result objects. The worker
        serves nothing else until that reply is taken."""
        return self._held(process_id, move=True, reopen=True).begin("evaluate", process_id,
                                                                    batch)

    def dry_run(self, process_id: str, msg: bytes, env: bytes) -> dict[str, Any]:
        """Evaluate without keeping any state change."""
        result: dict[str, Any] = self._held(process_id, move=False, reopen=True).call(
            "dry_run", process_id, msg, env)
        return result

    def checkpoint(self, process_id: str, path: Path, *, may_move: bool = False
                   ) -> CheckpointFile:
        """Write the process's current state to ``path``; with ``may_move``, rather raise
        :class:`ProcessMoved` than wait past ``move_after`` for a worker another holds."""
        ref: CheckpointFile = self._held(process_id, move=may_move, reopen=True).call(
            "checkpoint", process_id, str(path))
        return ref

    def resident_bytes(self, process_id: str) -> int:
        """RAM the process's resident instance holds now (memory plus rollback base);
        :class:`EvaluationError` rather than waiting long for a worker another holds."""
        handle = self._for(process_id)
        if not handle.take(process_id, self._move_after or MOVE_AFTER_SECONDS):
            raise EvaluationError(f"the worker of process {process_id} is busy")
        if handle.retired:
            handle.release()
            raise ProcessMoved(f"process {process_id} is not open")
        size: int = handle.call("resident_bytes", process_id)
        return size

    def validate_module(self, module_id: str, wasm: bytes) -> None:
        """Check ``wasm`` is a module this engine accepts (wasmtime's validator, no compile) in a
        worker, never in the process holding the node key; :class:`ModuleError` if not. An
        idle worker is used when there is one."""
        while True:
            with self._placing:
                workers = list(self._workers)
            handle = next((h for h in workers if h.lock.acquire(blocking=False)), None)
            if handle is None:
                handle = workers[hash(module_id) % self._base]
                if not handle.lock.acquire(timeout=self._move_after or MOVE_AFTER_SECONDS):
                    continue
            handle.held("")
            if not handle.retired:
                handle.call("validate", wasm)
                return
            handle.release()

    def close(self, process_id: str) -> None:
        """Drop a resident instance (later, before the worker's next request, when another
        process's call holds the worker now)."""
        with self._placing:
            handle = self._placement.pop(process_id, None)
            if handle is None:
                return
            handle.hosted -= 1
        if handle.take(process_id, self._move_after or MOVE_AFTER_SECONDS):
            if handle.retired:
                handle.release()
            else:
                handle.call("close", process_id)
        else:
            with handle.mutex:
                handle.stale.add(process_id)

    def stop(self) -> None:
        """Stop every worker."""
        self._stopping.set()
        if self._reaper is not None:
            self._reaper.join(timeout=30)
        with self._placing:
            workers = list(self._workers)
        for worker in workers:
            worker.stop()
