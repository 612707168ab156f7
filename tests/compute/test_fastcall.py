"""The engine's direct wasm call behaves exactly like wasmtime-py's public ``Func.__call__``:
same results, same traps, same exceptions from host functions (i32 and i64 signatures)."""

from __future__ import annotations

import pytest
import wasmtime

from appliance.compute.fastcall import integer_caller

WAT = """
(module
  (import "host" "boom" (func $boom (param i32)))
  (func (export "add32") (param i32 i32 i32 i32) (result i32)
    (i32.add (i32.add (local.get 0) (local.get 1)) (i32.add (local.get 2) (local.get 3))))
  (func (export "add64") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1)))
  (func (export "trap") (param i32) (result i32) unreachable)
  (func (export "host") (param i32) (result i32) (call $boom (local.get 0)) (i32.const 7))
  (func (export "float") (param f32) (result f32) (local.get 0)))
"""


class HostError(Exception):
    pass


def _boom(value: int) -> None:
    if value:
        raise HostError(f"host says {value}")


@pytest.fixture
def instance() -> tuple[wasmtime.Store, object]:
    store = wasmtime.Store()
    module = wasmtime.Module(store.engine, WAT)
    boom = wasmtime.Func(store, wasmtime.FuncType([wasmtime.ValType.i32()], []), _boom)
    return store, wasmtime.Instance(store, module, [boom]).exports(store)


def test_the_fast_path_is_taken_with_the_pinned_wasmtime(instance) -> None:  # type: ignore[no-untyped-def]
    store, exports = instance
    for name in ("add32", "add64", "trap", "host"):
        assert integer_caller(store, exports[name])[1], name
    assert not integer_caller(store, exports["float"])[1]


def test_results_match_the_public_call(instance) -> None:  # type: ignore[no-untyped-def]
    store, exports = instance
    add32, _ = integer_caller(store, exports["add32"])
    add64, _ = integer_caller(store, exports["add64"])
    for args in ((1, 2, 3, 4), (2**31 - 1, 1, 0, 0), (-5, 3, 0, 0)):
        assert add32(store, *args) == exports["add32"](store, *args)
    for args64 in ((2**40, 5), (-(2**62), 2**62 - 1)):
        assert add64(store, *args64) == exports["add64"](store, *args64)


def test_traps_and_host_exceptions_surface_as_with_the_public_call(instance) -> None:  # type: ignore[no-untyped-def]
    store, exports = instance
    trap, _ = integer_caller(store, exports["trap"])
    with pytest.raises(wasmtime.Trap) as fast:
        trap(store, 1)
    with pytest.raises(wasmtime.Trap) as public:
        exports["trap"](store, 1)
    assert fast.value.trap_code == public.value.trap_code
    host, _ = integer_caller(store, exports["host"])
    assert host(store, 0) == 7
    with pytest.raises(HostError, match="host says 3"):
        host(store, 3)
    assert host(store, 0) == 7  # nothing left over from the exception
