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
import os
import threading
import zlib
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from appliance.compute import ComputeEngine, ComputeLimits, ProcessInstance, Snapshot, module_format
from appliance.errors import ApplianceError, EvaluationError, ModuleError


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint on disk: gzip of raw memory (AO convention) plus the clock counter."""

    path: Path
    sha256: str
    raw_size: int
    clock: int


def write_checkpoint(snapshot: Snapshot, path: Path) -> CheckpointFile:
    """Write ``snapshot`` atomically as a gzip file and return its description."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
            gz.write(snapshot.memory)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return CheckpointFile(path, snapshot.sha256, len(snapshot.memory), snapshot.clock)


def read_checkpoint(ref: CheckpointFile) -> Snapshot:
    """Load a checkpoint and check it against its recorded SHA-256."""
    try:
        memory = gzip.decompress(ref.path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise EvaluationError(f"checkpoint {ref.path} is unreadable: {exc}") from None
    snapshot = Snapshot(memory, ref.clock)
    if hashlib.sha256(memory).hexdigest() != ref.sha256:
        raise EvaluationError(f"checkpoint {ref.path} does not match its SHA-256")
    return snapshot


class _Worker:
    """The worker side: resident instances keyed by process id."""

    def __init__(self, cache_dir: Path) -> None:
        self.engine = ComputeEngine(cache_dir)
        self.instances: dict[str, ProcessInstance] = {}

    def open(self, process_id: str, module_path: str, fmt: str, limits: ComputeLimits,
             checkpoint: CheckpointFile | None) -> None:
        loaded = self.engine.load(Path(module_path).read_bytes(), module_format(fmt))
        snapshot = read_checkpoint(checkpoint) if checkpoint else None
        self.instances[process_id] = self.engine.instantiate(loaded, limits, snapshot)

    def evaluate(self, process_id: str, batch: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        inst = self.instances[process_id]
        return [inst.handle_json(msg, env).as_json() for msg, env in batch]

    def dry_run(self, process_id: str, msg: bytes, env: bytes) -> dict[str, Any]:
        return self.instances[process_id].dry_run_json(msg, env).as_json()

    def checkpoint(self, process_id: str, path: str) -> CheckpointFile:
        return write_checkpoint(self.instances[process_id].snapshot(), Path(path))

    def close(self, process_id: str) -> None:
        self.instances.pop(process_id, None)


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
    """Sticky process → worker routing over a fixed number of worker processes."""

    def __init__(self, workers: int, cache_dir: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._workers = [_WorkerHandle(ctx, cache_dir) for _ in range(max(1, workers))]

    def _for(self, process_id: str) -> _WorkerHandle:
        index = int.from_bytes(hashlib.sha256(process_id.encode()).digest()[:4], "big")
        return self._workers[index % len(self._workers)]

    def generation(self, process_id: str) -> int:
        """Changes whenever the worker hosting ``process_id`` was restarted."""
        return self._for(process_id).generation

    def open(self, process_id: str, module_path: Path, fmt: str, limits: ComputeLimits,
             checkpoint: CheckpointFile | None) -> None:
        """Instantiate (or restore) a process in its worker."""
        self._for(process_id).call("open", process_id, str(module_path), fmt, limits, checkpoint)

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

    def close(self, process_id: str) -> None:
        """Drop a resident instance."""
        self._for(process_id).call("close", process_id)

    def stop(self) -> None:
        """Stop every worker."""
        for worker in self._workers:
            worker.stop()
