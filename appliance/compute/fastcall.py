"""A cheaper call into wasm for the one export the engine calls per message.

wasmtime-py's ``Func.__call__`` rebuilds the function's type and converts every argument through
``Val`` on each call (about 60 µs here, as much as a trivial module's whole evaluation). For a
function whose integer signature is known once, :func:`integer_caller` fills a reused argument
array and calls ``wasmtime_func_call`` directly, with wasmtime-py's own trap and host-exception
handling (``enter_wasm``). It relies on wasmtime-py internals of the pinned major version; when
they are not there it falls back to the public call, which behaves the same, only slower.
"""

from __future__ import annotations

from collections.abc import Callable
from ctypes import byref
from typing import Any

import wasmtime

ffi: Any
enter_wasm: Any
try:
    from wasmtime import _ffi as ffi
    from wasmtime._func import enter_wasm
except ImportError:  # pragma: no cover - another wasmtime-py layout
    ffi = enter_wasm = None

IntCaller = Callable[..., int]


def _kind(valtype: wasmtime.ValType) -> tuple[Any, str] | None:
    if ffi is None:
        return None
    if valtype == wasmtime.ValType.i32():
        return ffi.WASMTIME_I32, "i32"
    if valtype == wasmtime.ValType.i64():
        return ffi.WASMTIME_I64, "i64"
    return None


def integer_caller(store: wasmtime.Store, func: wasmtime.Func) -> tuple[IntCaller, bool]:
    """A caller ``(store, *ints) -> int`` for ``func``, and whether it is the fast path.

    ``func`` must take only i32/i64 parameters and return one i32/i64; otherwise (or without the
    internals) the public ``Func.__call__`` is returned.
    """
    ty = func.type(store)
    params = [_kind(p) for p in ty.params]
    results = [_kind(r) for r in ty.results]
    if enter_wasm is None or None in params or len(results) != 1 or results[0] is None:
        return func, False
    kinds = [p for p in params if p is not None]
    result_field = results[0][1]
    args = (ffi.wasmtime_val_t * len(kinds))()
    out = (ffi.wasmtime_val_t * 1)()
    for slot, (kind, _field) in zip(args, kinds, strict=True):
        slot.kind = kind
    fields = [name for _kind_id, name in kinds]
    raw = func._func

    def call(store: wasmtime.Store, *values: int) -> int:
        for slot, name, value in zip(args, fields, values, strict=True):
            setattr(slot.of, name, value)
        with enter_wasm(store) as trap:
            error = ffi.wasmtime_func_call(store._context(), byref(raw), args, len(fields),
                                           out, 1, trap)
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        result: Any = getattr(out[0].of, result_field)
        return int(result)

    return call, True
