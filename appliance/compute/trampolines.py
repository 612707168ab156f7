"""The hot emscripten imports, implemented in wasm so a message never leaves wasm for them.

``invoke_*`` (setjmp landing pads), ``_emscripten_throw_longjmp`` and ``_emscripten_memcpy_js``
run on every aos message. Done in Python, each costs a crossing through wasmtime-py (tens of
microseconds, and a trap with a backtrace for every longjmp). Here they are two tiny generated
modules: the *forwarder*, instantiated before the guest and satisfying its imports, calls through
a table of late-bound slots; the *implementation*, instantiated after the guest, imports the
guest's memory, function table and stack helpers, and fills those slots. A longjmp is a wasm
exception (tag defined by the forwarder) caught by the implementation's ``invoke_*`` — the same
semantics as the JS loader (restore the stack, ``setThrew(1, 0)``, return 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import wasmtime

MEMCPY_NAMES = ("_emscripten_memcpy_js", "emscripten_memcpy_js", "emscripten_memcpy_big")
LONGJMP = "_emscripten_throw_longjmp"


def _types(vals: list[wasmtime.ValType]) -> list[str]:
    return [str(v) for v in vals]


@dataclass(frozen=True)
class _Slot:
    name: str
    params: list[str]
    results: list[str]
    dyncall: list[str] | None = None  # the guest's dynCall_<sig> parameters, when it is used


def hot_imports(module: wasmtime.Module, rename: Callable[[str, str], tuple[str, str]],
                via_dyncall: bool) -> list[_Slot]:
    """The guest's imports this module implements in wasm, with their signatures.

    ``rename`` maps an import's (module, name) to the runtime's own (minified formats).
    ``via_dyncall``: the format's runtime calls a landing pad's target through the guest's own
    ``dynCall_<sig>`` export (metered code, so AO's gas counts it) instead of its table.
    """
    exports = {exp.name: exp.type for exp in module.exports}
    slots = []
    for imp in module.imports:
        ftype = imp.type
        if not isinstance(ftype, wasmtime.FuncType) or imp.name is None:
            continue
        space, name = rename(imp.module, imp.name)
        if space != "env":
            continue
        if name in MEMCPY_NAMES:
            slots.append(_Slot(name, _types(ftype.params), _types(ftype.results)))
        elif name.startswith("invoke_"):
            dyncall = exports.get("dynCall_" + name[len("invoke_"):]) if via_dyncall else None
            slots.append(_Slot(name, _types(ftype.params), _types(ftype.results),
                               _types(dyncall.params)
                               if isinstance(dyncall, wasmtime.FuncType) else None))
    return slots


def dyncall_names(slots: list[_Slot]) -> list[str]:
    """The guest exports the implementation imports after its fixed ones, in order."""
    return ["dynCall_" + slot.name[len("invoke_"):] for slot in slots if slot.dyncall is not None]


def _convert(value: str, have: str, want: str) -> str:
    if have == want:
        return value
    return f"(i32.wrap_i64 {value})" if have == "i64" else f"(i64.extend_i32_u {value})"


def _sig(params: list[str], results: list[str]) -> str:
    p = f"(param {' '.join(params)})" if params else ""
    r = f"(result {' '.join(results)})" if results else ""
    return f"{p} {r}"


def forwarder_wat(slots: list[_Slot]) -> str:
    """The module the guest imports from: forwards each slot through the late-bound table."""
    lines = ["(module", '  (tag $lj (export "longjmp"))',
             f'  (table $late (export "late") {max(len(slots), 1)} funcref)',
             f'  (func (export "{LONGJMP}") (throw $lj))']
    for i, slot in enumerate(slots):
        args = " ".join(f"(local.get {n})" for n in range(len(slot.params)))
        lines.append(f"  (type $t{i} (func {_sig(slot.params, slot.results)}))")
        lines.append(f'  (func (export "{slot.name}") {_sig(slot.params, slot.results)} '
                     f"(call_indirect $late (type $t{i}) {args} (i32.const {i})))")
    lines.append(")")
    return "\n".join(lines)


def needs_landing_pads(slots: list[_Slot]) -> bool:
    """Whether the guest uses setjmp/longjmp (any ``invoke_*`` import)."""
    return any(slot.name not in MEMCPY_NAMES for slot in slots)


def implementation_wat(slots: list[_Slot], memory64: bool, table64: bool) -> str:
    """The module bound after the guest exists: ``run``, memcpy and setjmp landing pads.

    ``run(msg_size, env_size)`` is the loader's ``ccall("handle", ...)`` up to the call:
    ``stackSave()``, one ``stackAlloc`` per string (the host wrote the strings where those
    allocations land) and ``handle``. These are the guest's own exports, so a metered module pays
    their AO gas as under the loader; the stack is restored once the message is done (after any
    Asyncify rewinds), as the loader's ``onDone`` does.
    """
    ptr = "i64" if memory64 else "i32"
    lines = ["(module", f'  (import "guest" "memory" (memory {"i64 " if memory64 else ""}0))',
             f'  (import "guest" "handle" (func $handle (param {ptr} {ptr}) (result {ptr})))',
             f'  (import "guest" "stack_restore" (func $restore (param {ptr})))',
             f'  (import "guest" "stack_save" (func $save (result {ptr})))',
             f'  (import "guest" "stack_alloc" (func $alloc (param {ptr}) (result {ptr})))']
    if needs_landing_pads(slots):
        lines += [
            f'  (import "guest" "table" (table {"i64 " if table64 else ""}0 funcref))',
            f'  (import "guest" "setThrew" (func $set_threw (param {ptr} i32)))',
            '  (import "forwarder" "longjmp" (tag $lj))',
        ]
    for i, slot in enumerate(slots):
        if slot.dyncall is not None:
            sig = _sig(slot.dyncall, slot.results)
            lines.append(f'  (import "guest" "dc{i}" (func $dc{i} {sig}))')
    lines += [
        f'  (func (export "run") (param {ptr} {ptr}) (result {ptr}) (local {ptr})',
        "    (drop (call $save))",
        "    (local.set 2 (call $alloc (local.get 0)))",
        "    (call $handle (local.get 2) (call $alloc (local.get 1))))",
    ]
    for i, slot in enumerate(slots):
        sig = _sig(slot.params, slot.results)
        if slot.name in MEMCPY_NAMES:
            dest = " (local.get 0)" if slot.results else ""
            lines.append(f'  (func (export "s{i}") {sig} '
                         f"(memory.copy (local.get 0) (local.get 1) (local.get 2)){dest})")
            continue
        target = _sig(slot.params[1:], slot.results)
        args = " ".join(f"(local.get {n})" for n in range(1, len(slot.params)))
        if slot.dyncall is not None:
            index = _convert("(local.get 0)", slot.params[0], slot.dyncall[0])
            call = f"(call $dc{i} {index} {args})"
        else:
            index = _convert("(local.get 0)", slot.params[0], "i64" if table64 else "i32")
            call = f"(call_indirect (type $target{i}) {args} {index})"
        zero = "".join(f" ({r}.const 0)" for r in slot.results)
        block_type = f"(result {' '.join(slot.results)})" if slot.results else ""
        sp = len(slot.params)
        lines += [
            f"  (type $target{i} (func {target}))",
            f'  (func (export "s{i}") {sig} (local {ptr})',
            f"    (local.set {sp} (call $save))",
            "    (block $caught",
            f"      (try_table {block_type} (catch $lj $caught)",
            f"        {call})",
            "      (return))",
            f"    (call $restore (local.get {sp}))",
            f"    (call $set_threw ({ptr}.const 1) (i32.const 0)){zero})",
        ]
    lines.append(")")
    return "\n".join(lines)
