"""AO's gas: our rewrite is @permaweb/wasm-metering's, and limits cut where the loader cuts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import wasmtime

from appliance.compute import ComputeEngine, ComputeLimits, module_format
from appliance.compute.limits import limits_from_tags
from appliance.compute.metering import meter_module
from appliance.errors import ModuleError
from tests.support.paths import _missing, node_modules, vectors_dir

HOSTILE = Path(__file__).with_name("hostile.wat")  # uses memory.fill: not meterable
LOOPER = """(module
  (memory (export "memory") 2)
  (global $sp (mut i32) (i32.const 65536))
  (data (i32.const 1024) "{\\"ok\\":true,\\"response\\":{\\"Output\\":\\"ok\\"}}\\00")
  (table 2 funcref)
  (elem (i32.const 0) $bump $handle)
  (func (export "emscripten_stack_get_current") (result i32) (global.get $sp))
  (func (export "_emscripten_stack_restore") (param i32) (global.set $sp (local.get 0)))
  (func (export "_emscripten_stack_alloc") (param $n i32) (result i32)
    (global.set $sp (i32.and (i32.sub (global.get $sp) (local.get $n)) (i32.const -16)))
    (global.get $sp))
  (func $bump (i32.store (i32.const 2048) (i32.add (i32.load (i32.const 2048)) (i32.const 1))))
  (func $handle (export "handle") (param $msg i32) (param $env i32) (result i32)
    (call $bump)
    (if (i32.eq (i32.load8_u (i32.add (local.get $msg) (i32.const 11))) (i32.const 76))
      (then (loop $l (call_indirect (i32.const 0)) (br $l))))
    (i32.const 1024)))"""
ENV = {"Process": {"Id": "p", "Owner": "o", "Tags": []}}
METERED32 = module_format("wasm32-unknown-emscripten-metering")
ORACLE = """
const { readFileSync, writeFileSync } = require("node:fs");
const metering = require("@permaweb/wasm-metering");
const [input, meterType, output] = process.argv.slice(2);
writeFileSync(output, metering.meterWASM(readFileSync(input), { meterType }));
"""


def _loader_fixture(name: str) -> Path:
    return vectors_dir() / "ao-loader" / f"{name}.wasm"


def _npm_rewrite(source: Path, meter_type: str, out: Path) -> bytes:
    node = shutil.which("node")
    if node is None:
        _missing("node is required for the metering oracle", "AO_APPLIANCE_REQUIRE_NODE")
    assert node is not None
    script = out.with_suffix(".cjs")
    script.write_text(ORACLE, encoding="utf-8")
    subprocess.run([node, str(script), str(source), meter_type, str(out)], check=True,
                   cwd=node_modules().parent, timeout=300,
                   env={"NODE_PATH": str(node_modules()), "PATH": "/usr/bin:/bin"})
    return out.read_bytes()


@pytest.mark.parametrize(("fixture", "meter_type"),
                         [("emscripten4", "i32"), ("wasm64-emscripten", "i64")])
def test_rewrite_is_the_npm_packages_byte_for_byte(tmp_path: Path, fixture: str,
                                                   meter_type: str) -> None:
    source = _loader_fixture(fixture)
    theirs = _npm_rewrite(source, meter_type, tmp_path / "metered.wasm")
    assert meter_module(source.read_bytes(), meter_type) == theirs


def test_rewrite_of_a_small_module_matches_too(tmp_path: Path) -> None:
    """Exports, the element segment and calls past the new import are renumbered alike."""
    source = tmp_path / "looper.wasm"
    source.write_bytes(wasmtime.wat2wasm(LOOPER))
    theirs = _npm_rewrite(source, "i32", tmp_path / "metered.wasm")
    assert meter_module(source.read_bytes(), "i32") == theirs


def test_bulk_memory_module_is_refused_by_both(tmp_path: Path) -> None:
    source = tmp_path / "hostile.wasm"
    source.write_bytes(wasmtime.wat2wasm(HOSTILE.read_text()))
    with pytest.raises(subprocess.CalledProcessError):
        _npm_rewrite(source, "i32", tmp_path / "metered.wasm")
    with pytest.raises(ModuleError, match="opcode 0xfc"):
        meter_module(source.read_bytes(), "i32")


def test_already_metered_module_is_refused() -> None:
    wasm = meter_module(wasmtime.wat2wasm(LOOPER), "i32")
    with pytest.raises(ModuleError, match="already metered"):
        meter_module(wasm, "i32")


def test_compute_limit_is_ao_gas_on_a_metering_format() -> None:
    engine = ComputeEngine()
    loaded = engine.load(wasmtime.wat2wasm(LOOPER), METERED32)
    limits = limits_from_tags([{"name": "Compute-Limit", "value": "1000000"}], ComputeLimits())
    assert limits.gas == 1_000_000 and limits.fuel == ComputeLimits().fuel
    inst = engine.instantiate(loaded, limits)
    ok = inst.handle({"Action": "E"}, ENV)
    assert ok.error is None and ok.gas_used > 0
    assert inst.handle({"Action": "E"}, ENV).gas_used == ok.gas_used
    looped = inst.handle({"Action": "L"}, ENV)
    assert looped.error == "Error: out of gas!"
    assert looped.gas_used == 0, "a message that throws reports no gas, as the CU records it"
    assert inst.handle({"Action": "E"}, ENV).error is None


def test_plain_format_reports_no_gas_and_ignores_compute_limit() -> None:
    engine = ComputeEngine()
    loaded = engine.load(wasmtime.wat2wasm(HOSTILE.read_text()),
                         module_format("wasm32-unknown-emscripten4"))
    limits = limits_from_tags([{"name": "Compute-Limit", "value": "1"}], ComputeLimits())
    result = engine.instantiate(loaded, limits).handle({"Action": "E"}, ENV)
    assert result.error is None and result.gas_used == 0 and result.fuel_used > 0


@pytest.mark.parametrize("fmt", ["wasm32-unknown-emscripten-metering",
                                 "wasm64-unknown-emscripten-draft_2024_10_16-metering"])
@pytest.mark.parametrize("limit", [10_750_000_000, 10**8])
def test_loader_test_limit_runs_out_at_slot_0(fmt: str, limit: int) -> None:
    """The loader's own metering test: its loop message runs out of gas with this limit."""
    fixture = "emscripten4" if fmt.startswith("wasm32") else "wasm64-emscripten"
    engine = ComputeEngine()
    loaded = engine.load(_loader_fixture(fixture).read_bytes(), module_format(fmt))
    inst = engine.instantiate(loaded, ComputeLimits(gas=limit))
    msg = {"Target": "1", "From": "FOOBAR", "Owner": "FOOBAR", "Module": "FOO", "Id": "1",
           "Block-Height": "1000", "Timestamp": 1_720_000_000_000,
           "Tags": [{"name": "Action", "value": "Eval"}],
           "Data": "count = 0 for i = 1, 1000 do count = count + 1 end return count"}
    env = {"Process": {"Id": "1", "Owner": "FOOBAR",
                       "Tags": [{"name": "Name", "value": "TEST_PROCESS_OWNER"}]}}
    assert inst.handle(msg, env).error == "Error: out of gas!"
