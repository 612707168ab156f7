"""Process actors' wasm runs in worker processes, each single-threaded.

Why processes, not threads: evaluation is CPU-bound wasm, and wasmtime-py hands a host
function's exception back through one module-global slot, which concurrent guests that longjmp
(every Lua error does) could race on. A worker owns the resident instances of the processes
hashed to it and evaluates their batches serially; the parent keeps I/O, signing and the store.
A crash of a worker (say, a runtime fault) costs only a respawn and a replay from checkpoint.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import multiprocessing
import threading
import time
import zlib
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


class _Worker:
    """The worker side: resident instances keyed by process id."""

    def __init__(self, cache_dir: Path) -> None:
        self.engine = ComputeEngine(cache_dir)
        self.instances: dict[str, ProcessInstance] = {}

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
        return self.instances[process_id].resident_bytes()

    def evaluate(self, process_id: str, batch: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        inst = self.instances[process_id]
        return [inst.handle_json(msg, env).as_json() for msg, env in batch]

    def dry_run(self, process_id: str, msg: bytes, env: bytes) -> dict[str, Any]:
        return self.instances[process_id].dry_run_json(msg, env).as_json()

    def checkpoint(self, process_id: str, path: str) -> CheckpointFile:
        return checkpoint_instance(self.instances[process_id], Path(path))

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


def _serve(conn: Connection, cache_dir: Path) -> None:
    worker = _Worker(cache_dir)
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        method, args = request
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


class WorkerCrashed(EvaluationError):
    """A worker process died; its processes must be reopened from their checkpoints."""


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
    def __init__(self, ctx: Any, cache_dir: Path) -> None:
        self._ctx, self._cache_dir = ctx, cache_dir
        self.lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self.conn: Connection = parent
        self.proc = self._ctx.Process(target=_serve, args=(child, self._cache_dir),
                                      name="ao-evaluator", daemon=True)
        self.proc.start()
        child.close()
        self.generation = getattr(self, "generation", -1) + 1

    def call(self, method: str, *args: Any) -> Any:
        return self.begin(method, *args).result()

    def begin(self, method: str, *args: Any) -> PendingCall:
        """Send a request and hold the worker until :meth:`PendingCall.result` is taken."""
        self.lock.acquire()
        try:
            self.conn.send((method, args))
        except (EOFError, OSError, BrokenPipeError):
            self._crashed()
        except BaseException:
            self.lock.release()
            raise
        return PendingCall(self)

    def finish(self) -> Any:
        try:
            ok, value = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._crashed()
        except BaseException:
            self.lock.release()
            raise
        self.lock.release()
        if not ok:
            kind, message = value
            raise ModuleError(message) if kind == "ModuleError" else EvaluationError(message)
        return value

    def _crashed(self) -> NoReturn:
        try:
            self.proc.join(timeout=1)
            self._start()
        finally:
            self.lock.release()
        raise WorkerCrashed("evaluation worker died; processes will be reopened") from None

    def stop(self) -> None:
        with self.lock:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(timeout=5)
            if self.proc.is_alive():
                self.proc.kill()


class EvaluatorPool:
    """Sticky process → worker routing over a fixed number of worker processes: a process
    stays on the worker it was first placed on, the one hosting the fewest processes then."""

    def __init__(self, workers: int, cache_dir: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._workers = [_WorkerHandle(ctx, cache_dir) for _ in range(max(1, workers))]
        self._placement: dict[str, int] = {}
        self._hosted = [0] * len(self._workers)
        self._placing = threading.Lock()

    def _for(self, process_id: str) -> _WorkerHandle:
        with self._placing:
            index = self._placement.get(process_id)
            if index is None:
                index = self._hosted.index(min(self._hosted))
                self._placement[process_id] = index
                self._hosted[index] += 1
        return self._workers[index]

    def generation(self, process_id: str) -> int:
        """Changes whenever the worker hosting ``process_id`` was restarted."""
        return self._for(process_id).generation

    def open(self, process_id: str, module_path: Path, fmt: str, limits: ComputeLimits,
             checkpoint: CheckpointFile | None) -> OpenReport:
        """Instantiate (or restore) a process in its worker."""
        report: OpenReport = self._for(process_id).call("open", process_id, str(module_path),
                                                        fmt, limits, checkpoint)
        return report

    def evaluate(self, process_id: str, batch: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        """Evaluate messages in order; one result object per message."""
        result: list[dict[str, Any]] = self._for(process_id).call("evaluate", process_id, batch)
        return result

    def begin_evaluate(self, process_id: str, batch: list[tuple[bytes, bytes]]) -> PendingCall:
        """Start :meth:`evaluate`; its ``result()`` is the list of result objects. The worker
        serves nothing else until that reply is taken."""
        return self._for(process_id).begin("evaluate", process_id, batch)

    def dry_run(self, process_id: str, msg: bytes, env: bytes) -> dict[str, Any]:
        """Evaluate without keeping any state change."""
        result: dict[str, Any] = self._for(process_id).call("dry_run", process_id, msg, env)
        return result

    def checkpoint(self, process_id: str, path: Path) -> CheckpointFile:
        """Write the process's current state to ``path``."""
        ref: CheckpointFile = self._for(process_id).call("checkpoint", process_id, str(path))
        return ref

    def resident_bytes(self, process_id: str) -> int:
        """RAM the process's resident instance holds now (memory plus rollback base)."""
        size: int = self._for(process_id).call("resident_bytes", process_id)
        return size

    def validate_module(self, module_id: str, wasm: bytes) -> None:
        """Check ``wasm`` is a module this engine accepts (wasmtime's validator, no compile) in a
        worker, never in the process holding the node key; :class:`ModuleError` if not."""
        self._workers[hash(module_id) % len(self._workers)].call("validate", wasm)

    def close(self, process_id: str) -> None:
        """Drop a resident instance."""
        self._for(process_id).call("close", process_id)
        with self._placing:
            self._hosted[self._placement.pop(process_id)] -= 1

    def stop(self) -> None:
        """Stop every worker."""
        for worker in self._workers:
            worker.stop()
