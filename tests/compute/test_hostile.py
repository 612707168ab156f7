"""A module cannot take the node down (DESIGN §5 invariant 5): limits, traps and rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from appliance.compute import ComputeEngine, ComputeLimits, module_format
from appliance.errors import ConfigError, ModuleError

WAT = Path(__file__).with_name("hostile.wat")
FORMAT = module_format("wasm32-unknown-emscripten4")
ENV = {"Process": {"Id": "p", "Owner": "o", "Tags": []}}


@pytest.fixture(scope="module")
def engine() -> ComputeEngine:
    return ComputeEngine()


def _instance(engine: ComputeEngine, **limits: object):  # type: ignore[no-untyped-def]
    loaded = engine.load(wasmtime.wat2wasm(WAT.read_text()), FORMAT)
    return engine.instantiate(loaded, ComputeLimits(**limits))  # type: ignore[arg-type]


def _counter(inst) -> int:  # type: ignore[no-untyped-def]
    return int.from_bytes(inst.snapshot().memory[2048:2052], "little")


def _send(inst, op: str):  # type: ignore[no-untyped-def]
    return inst.handle({"Action": op}, ENV)


def test_success_changes_state(engine: ComputeEngine) -> None:
    inst = _instance(engine)
    result = _send(inst, "E")
    assert result.error is None
    assert result.output == "ok"
    assert _counter(inst) == 1


def test_infinite_loop_runs_out_of_gas_and_node_survives(engine: ComputeEngine) -> None:
    inst = _instance(engine, fuel=5_000_000)
    _send(inst, "E")
    result = _send(inst, "L")
    assert "out of gas" in result.error
    assert result.gas_used == 0, "a plain format reports no AO gas"
    assert result.fuel_used == 5_000_000
    assert _counter(inst) == 1, "state rolled back to before the failed message"
    assert _send(inst, "E").error is None
    assert _counter(inst) == 2


def test_wall_clock_limit(engine: ComputeEngine) -> None:
    inst = _instance(engine, wall_clock_seconds=0.2)
    result = _send(inst, "L")
    assert result.error == "wall-clock limit exceeded (0.2 s)"
    assert _send(inst, "E").error is None


def test_memory_growth_past_limit_is_an_error_and_rolls_back(engine: ComputeEngine) -> None:
    inst = _instance(engine, memory_bytes=4 * 1024 * 1024)
    before = len(inst.snapshot().memory)
    result = _send(inst, "G")
    assert "trap" in result.error
    assert len(inst.snapshot().memory) == before
    assert _counter(inst) == 0


def test_trap_rolls_back_memory(engine: ComputeEngine) -> None:
    inst = _instance(engine)
    _send(inst, "E")
    before = inst.memory_sha256()
    assert "unreachable" in _send(inst, "T").error
    assert inst.memory_sha256() == before


def test_huge_output_is_bounded(engine: ComputeEngine) -> None:
    inst = _instance(engine, max_response_bytes=1024 * 1024)
    result = _send(inst, "H")
    assert "response exceeds" in result.error
    assert len(inst.snapshot().memory) == 2 * 65536


def test_ok_false_is_the_messages_error(engine: ComputeEngine) -> None:
    inst = _instance(engine)
    result = _send(inst, "F")
    assert result.error == "handler failed"
    assert _counter(inst) == 0


def test_rollback_replays_across_the_window(engine: ComputeEngine) -> None:
    inst = _instance(engine, rollback_window=3)
    for _ in range(7):
        _send(inst, "E")
    _send(inst, "T")
    assert _counter(inst) == 7


def test_format_must_match_memory_width(engine: ComputeEngine) -> None:
    with pytest.raises(ModuleError, match="wasm32 memory"):
        engine.load(wasmtime.wat2wasm(WAT.read_text()),
                    module_format("wasm64-unknown-emscripten-draft_2024_02_15"))


def test_invalid_module_and_unknown_format() -> None:
    with pytest.raises(ModuleError, match="invalid wasm"):
        ComputeEngine().load(b"\0asm\x01\0\0\0garbage", FORMAT)
    with pytest.raises(ModuleError, match="unknown module format"):
        module_format("wasm33-unknown")


def test_missing_import_is_named() -> None:
    wat = '(module (import "env" "mystery" (func)) (memory (export "memory") 1))'
    engine = ComputeEngine()
    with pytest.raises(ModuleError):
        engine.instantiate(engine.load(wasmtime.wat2wasm(wat), FORMAT), ComputeLimits())


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError):
        ComputeLimits(memory_bytes=10)


HOST_FAILURE = """(module
  (import "env" "_tzset_js" (func $tz (param i32 i32)))
  (memory (export "memory") 2)
  (global $sp (mut i32) (i32.const 65536))
  (data (i32.const 1024) "{\\"ok\\":true,\\"response\\":{\\"Output\\":\\"ok\\"}}\\00")
  (func (export "emscripten_stack_get_current") (result i32) (global.get $sp))
  (func (export "_emscripten_stack_restore") (param i32) (global.set $sp (local.get 0)))
  (func (export "_emscripten_stack_alloc") (param $n i32) (result i32)
    (global.set $sp (i32.and (i32.sub (global.get $sp) (local.get $n)) (i32.const -16)))
    (global.get $sp))
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (if (i32.eq (i32.load8_u (i32.add (local.get $msg) (i32.const 11))) (i32.const 84))
      (then (call $tz (i32.const 0) (i32.const 4))))
    (i32.const 1024)))"""


def test_host_import_failure_is_the_messages_error(engine: ComputeEngine) -> None:
    """A host function called with the wrong arity (TypeError in Python) fails that message."""
    loaded = engine.load(wasmtime.wat2wasm(HOST_FAILURE), FORMAT)
    inst = engine.instantiate(loaded, ComputeLimits())
    result = _send(inst, "T")
    assert result.error is not None and "host function env._tzset_js failed" in result.error
    assert _send(inst, "E").error is None


def test_limit_tags_lower_the_operators_limits_never_raise_them() -> None:
    from appliance.compute.limits import above_maximum, capped_limits  # noqa: PLC0415

    maximum = ComputeLimits(memory_bytes=512 * 1024**2, gas=1000)
    tags = [{"name": "Memory-Limit", "value": "1-gb"}, {"name": "Compute-Limit", "value": "10"}]
    assert capped_limits(tags, maximum) == ComputeLimits(memory_bytes=512 * 1024**2, gas=10)
    assert above_maximum(tags, maximum) == \
        "Memory-Limit 1000000000 exceeds this node's maximum of 536870912"
    assert above_maximum(tags[1:], maximum) is None
    with pytest.raises(ConfigError):
        above_maximum([{"name": "Compute-Limit", "value": "x"}], maximum)
