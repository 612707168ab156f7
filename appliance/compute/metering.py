"""AO's gas: the ``@permaweb/wasm-metering`` rewrite, and the wasm-side counter that pays it.

For the ``-metering`` formats AO's loader rewrites the module once with ``@permaweb/wasm-metering``
0.2.x before compiling it: an import ``metering.usegas`` is appended (every defined function's
index moves up by one) and each function body is cut into segments that end at a branching
instruction (``grow_memory end br br_table br_if if else return loop``, inclusive); a segment whose
summed cost (the package's default table) is not zero is preceded by ``<meter>.const cost; call
usegas``, whose own cost (91) is added to it. :func:`meter_module` performs the same rewrite:
same segments, same costs, same call sites, so ``GasUsed`` and the point where a message runs out
of gas are the loader's. It reads only the opcodes the package's parser knows (the MVP set plus
sign extension); a module with any other opcode fails to load under the loader, and is refused
here.

``usegas`` itself (imported by rewritten modules and by modules metered at build time, such as
emscripten2's aos 1.x) is not a Python callback, which would cost a host crossing per basic
block, but :func:`gas_wat`, a three-instruction wasm function over a global counter in a tiny
helper instance: ``used += amount; if used > limit: trap``, the loader's ``Module.gas`` exactly.
"""

from __future__ import annotations

from appliance.errors import ModuleError

REWRITE_VERSION = 1  # part of the native-code cache key of rewritten modules
_BRANCHING = frozenset((0x40, 0x0B, 0x0C, 0x0E, 0x0D, 0x04, 0x05, 0x0F, 0x03))
_METER_OVERHEAD = 1 + 90  # the cost of "<meter>.const" and "call" in the package's table
_CALL = 0x10

# Immediate kinds, as the package's parser reads them.
_NONE, _U32, _S32, _S64, _BYTES4, _BYTES8, _BLOCK, _BR_TABLE, _CALL_INDIRECT, _MEMARG, _BYTE = \
    range(11)


def _op_table() -> tuple[dict[int, int], dict[int, int]]:
    """Opcode -> cost and opcode -> immediate kind, from the package's names and cost table."""
    cost_by_name = {
        "get_local": 120, "set_local": 120, "tee_local": 120, "get_global": 120,
        "set_global": 120, "load8_s": 120, "load8_u": 120, "load16_s": 120, "load16_u": 120,
        "load32_s": 120, "load32_u": 120, "load": 120, "store8": 120, "store16": 120,
        "store32": 120, "store": 120, "grow_memory": 10000, "current_memory": 100, "nop": 1,
        "block": 1, "loop": 1, "if": 1, "else": 90, "br": 90, "br_if": 90, "br_table": 120,
        "return": 90, "call": 90, "call_indirect": 10000, "const": 1, "add": 45, "sub": 45,
        "mul": 45, "div_s": 36000, "div_u": 36000, "rem_s": 36000, "rem_u": 36000, "and": 45,
        "or": 45, "xor": 45, "shl": 67, "shr_u": 67, "shr_s": 67, "rotl": 90, "rotr": 90,
        "eq": 45, "eqz": 45, "ne": 45, "lt_s": 45, "lt_u": 45, "le_s": 45, "le_u": 45,
        "gt_s": 45, "gt_u": 45, "ge_s": 45, "ge_u": 45, "clz": 45, "ctz": 45, "popcnt": 45,
        "drop": 120, "select": 120, "unreachable": 1,
    }
    names: dict[int, str] = {
        0x00: "unreachable", 0x01: "nop", 0x02: "block", 0x03: "loop", 0x04: "if", 0x05: "else",
        0x0B: "end", 0x0C: "br", 0x0D: "br_if", 0x0E: "br_table", 0x0F: "return", 0x10: "call",
        0x11: "call_indirect", 0x1A: "drop", 0x1B: "select", 0x20: "get_local",
        0x21: "set_local", 0x22: "tee_local", 0x23: "get_global", 0x24: "set_global",
        0x3F: "current_memory", 0x40: "grow_memory",
    }
    loads = ("load", "load", "load", "load", "load8_s", "load8_u", "load16_s", "load16_u",
             "load8_s", "load8_u", "load16_s", "load16_u", "load32_s", "load32_u", "store",
             "store", "store", "store", "store8", "store16", "store8", "store16", "store32")
    for offset, name in enumerate(loads):
        names[0x28 + offset] = name
    names.update({0x41: "const", 0x42: "const", 0x43: "const", 0x44: "const"})
    numeric = str.split(
        "eqz eq ne lt_s lt_u gt_s gt_u le_s le_u ge_s ge_u "          # i32 0x45..
        "eqz eq ne lt_s lt_u gt_s gt_u le_s le_u ge_s ge_u "          # i64 0x50..
        "eq ne lt gt le ge eq ne lt gt le ge "                        # f32, f64 0x5b..
        "clz ctz popcnt add sub mul div_s div_u rem_s rem_u and or xor shl shr_s shr_u rotl "
        "rotr clz ctz popcnt add sub mul div_s div_u rem_s rem_u and or xor shl shr_s shr_u "
        "rotl rotr abs neg ceil floor trunc nearest sqrt add sub mul div min max copysign abs "
        "neg ceil floor trunc nearest sqrt add sub mul div min max copysign")
    for offset, name in enumerate(numeric):
        names[0x45 + offset] = name
    for opcode in range(0xA7, 0xC5):  # conversions, reinterpretations, sign extension: no cost
        names[opcode] = "convert"
    immediates = {0x02: _BLOCK, 0x03: _BLOCK, 0x04: _BLOCK, 0x0C: _U32, 0x0D: _U32,
                  0x0E: _BR_TABLE, 0x10: _U32, 0x11: _CALL_INDIRECT, 0x20: _U32, 0x21: _U32,
                  0x22: _U32, 0x23: _U32, 0x24: _U32, 0x3F: _BYTE, 0x40: _BYTE,
                  0x41: _S32, 0x42: _S64, 0x43: _BYTES4, 0x44: _BYTES8}
    for opcode in range(0x28, 0x3F):
        immediates[opcode] = _MEMARG
    costs = {opcode: cost_by_name.get(name, 0) for opcode, name in names.items()}
    kinds = {opcode: immediates.get(opcode, _NONE) for opcode in names}
    return costs, kinds


_COSTS, _KINDS = _op_table()


def _leb_u(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _skip_leb(data: bytes | memoryview, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def _enc_u(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _enc_s(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _vec(count: int, body: bytes) -> bytes:
    return _enc_u(count) + body


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes((section_id,)) + _enc_u(len(payload)) + payload


def _sections(wasm: bytes) -> list[tuple[int, bytes]]:
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise ModuleError("invalid wasm module: bad magic or version")
    pos, out = 8, []
    try:
        while pos < len(wasm):
            section_id = wasm[pos]
            size, pos = _leb_u(wasm, pos + 1)
            out.append((section_id, wasm[pos:pos + size]))
            pos += size
    except IndexError:
        raise ModuleError("invalid wasm module: truncated section") from None
    return out


def _skip_limits(data: bytes, pos: int) -> int:
    flags, pos = _leb_u(data, pos)
    pos = _skip_leb(data, pos)
    return _skip_leb(data, pos) if flags & 1 else pos


def _count_func_imports(payload: bytes) -> int:
    count, pos = _leb_u(payload, 0)
    functions = 0
    for _ in range(count):
        for _name in range(2):
            length, pos = _leb_u(payload, pos)
            pos += length
        kind = payload[pos]
        pos += 1
        if kind == 0:
            functions += 1
            pos = _skip_leb(payload, pos)
        elif kind == 1:
            pos = _skip_limits(payload, pos + 1)
        elif kind == 2:
            pos = _skip_limits(payload, pos)
        elif kind == 3:
            pos += 2
        else:
            raise ModuleError(f"the AO metering rewrite cannot read import kind {kind}")
    return functions


def _has_import(payload: bytes, module: bytes, name: bytes) -> bool:
    count, pos = _leb_u(payload, 0)
    for _ in range(count):
        strings = []
        for _name in range(2):
            length, pos = _leb_u(payload, pos)
            strings.append(payload[pos:pos + length])
            pos += length
        kind = payload[pos]
        pos += 1
        if strings == [module, name]:
            return True
        if kind == 0:
            pos = _skip_leb(payload, pos)
        elif kind == 1:
            pos = _skip_limits(payload, pos + 1)
        elif kind == 2:
            pos = _skip_limits(payload, pos)
        else:
            pos += 2
    return False


def _remap_exports(payload: bytes, first: int) -> bytes:
    count, pos = _leb_u(payload, 0)
    out = bytearray(_enc_u(count))
    for _ in range(count):
        length, name_at = _leb_u(payload, pos)
        kind_at = name_at + length
        index, after = _leb_u(payload, kind_at + 1)
        if payload[kind_at] == 0 and index >= first:
            index += 1
        out += payload[pos:kind_at + 1] + _enc_u(index)
        pos = after
    return bytes(out)


def _remap_elements(payload: bytes, first: int) -> bytes:
    count, pos = _leb_u(payload, 0)
    out = bytearray(_enc_u(count))
    for _ in range(count):
        flags, after = _leb_u(payload, pos)
        if flags != 0:
            raise ModuleError("the AO metering rewrite reads only active element segments of "
                              "table 0 (the loader's parser fails on this module)")
        expr_end = _skip_init_expr(payload, after)
        out += payload[pos:expr_end]
        n, pos = _leb_u(payload, expr_end)
        out += _enc_u(n)
        for _ in range(n):
            index, pos = _leb_u(payload, pos)
            out += _enc_u(index + 1 if index >= first else index)
    return bytes(out)


def _skip_init_expr(payload: bytes, pos: int) -> int:
    while payload[pos] != 0x0B:
        pos = _skip_op(payload, pos)
    return pos + 1


def _skip_op(data: bytes | memoryview, pos: int) -> int:
    opcode = data[pos]
    kind = _KINDS.get(opcode)
    if kind is None:
        raise ModuleError(f"the module uses opcode 0x{opcode:02x}, which AO's metering "
                          f"(@permaweb/wasm-metering) cannot read; the loader refuses it too")
    pos += 1
    if kind == _NONE:
        return pos
    if kind in (_U32, _S32, _S64):
        return _skip_leb(data, pos)
    if kind == _BYTES4:
        return pos + 4
    if kind == _BYTES8:
        return pos + 8
    if kind in (_BLOCK, _BYTE):
        return pos + 1
    if kind == _CALL_INDIRECT:
        return _skip_leb(data, pos) + 1
    if kind == _MEMARG:
        return _skip_leb(data, _skip_leb(data, pos))
    n, pos = _leb_u(data, pos)  # br_table
    for _ in range(n + 1):
        pos = _skip_leb(data, pos)
    return pos


def _meter_body(body: bytes, meter: bytes, meter_index: int) -> bytes:
    """One function body with a metering statement before each costed segment."""
    n_locals, pos = _leb_u(body, 0)
    for _ in range(n_locals):
        pos = _skip_leb(body, pos) + 1
    out = bytearray(body[:pos])
    call = bytes((_CALL,)) + _enc_u(meter_index)
    end = len(body)
    costs = _COSTS
    while pos < end:
        start, cost = pos, 0
        pieces: list[bytes] = []
        copied = pos
        while True:
            opcode = body[pos]
            op_cost = costs.get(opcode)
            if op_cost is None:
                _skip_op(body, pos)  # raises with the opcode named
            cost += op_cost or 0
            if opcode == _CALL:
                index, after = _leb_u(body, pos + 1)
                if index >= meter_index:
                    pieces.append(body[copied:pos])
                    pieces.append(bytes((_CALL,)) + _enc_u(index + 1))
                    copied = after
                pos = after
            else:
                pos = _skip_op(body, pos)
            if opcode in _BRANCHING or pos >= end:
                break
        if cost:
            out += meter + _enc_s(cost + _METER_OVERHEAD) + call
        if pieces:
            out += b"".join(pieces)
            out += body[copied:pos]
        else:
            out += body[start:pos]
    return bytes(out)


def _meter_code(payload: bytes, meter: bytes, meter_index: int) -> bytes:
    count, pos = _leb_u(payload, 0)
    out = bytearray(_enc_u(count))
    for _ in range(count):
        size, pos = _leb_u(payload, pos)
        metered = _meter_body(payload[pos:pos + size], meter, meter_index)
        out += _enc_u(len(metered)) + metered
        pos += size
    return bytes(out)


def meter_module(wasm: bytes, meter_type: str) -> bytes:
    """``wasm`` rewritten as ``@permaweb/wasm-metering``'s ``meterWASM(wasm, {meterType})``."""
    if meter_type not in ("i32", "i64"):
        raise ValueError(f"meter type must be i32 or i64, not {meter_type!r}")
    valtype = 0x7F if meter_type == "i32" else 0x7E
    meter = bytes((0x41 if meter_type == "i32" else 0x42,))
    try:
        sections = _sections(wasm)
        ids = [section_id for section_id, _ in sections]
        if 1 not in ids:
            sections.insert(0, (1, b"\0"))
        if 2 not in [section_id for section_id, _ in sections]:
            at = next(i for i, (sid, _) in enumerate(sections) if sid == 1) + 1
            sections.insert(at, (2, b"\0"))
        type_payload = dict(sections)[1]
        n_types, types_at = _leb_u(type_payload, 0)
        import_payload = dict(sections)[2]
        if _has_import(import_payload, b"metering", b"usegas"):
            raise ModuleError("importing metering function is not allowed (the module is "
                              "already metered; use its plain format)")
        first = _count_func_imports(import_payload)
        n_imports, imports_at = _leb_u(import_payload, 0)
        new_import = (_enc_u(8) + b"metering" + _enc_u(6) + b"usegas" + b"\0"
                      + _enc_u(n_types))
        out = bytearray(wasm[:8])
        for section_id, original in sections:
            payload = original
            if section_id == 1:
                payload = _vec(n_types + 1, type_payload[types_at:]
                               + bytes((0x60, 1, valtype, 0)))
            elif section_id == 2:
                payload = _vec(n_imports + 1, import_payload[imports_at:] + new_import)
            elif section_id == 7:
                payload = _remap_exports(payload, first)
            elif section_id == 8:
                index, _ = _leb_u(payload, 0)
                payload = _enc_u(index + 1 if index >= first else index)
            elif section_id == 9:
                payload = _remap_elements(payload, first)
            elif section_id == 10:
                payload = _meter_code(payload, meter, first)
            out += _section(section_id, payload)
    except IndexError:
        raise ModuleError("invalid wasm module: truncated while adding AO metering") from None
    return bytes(out)


def gas_wat(meter_type: str) -> str:
    """The helper module: ``usegas`` and ``gas_used`` over the ``used``/``limit`` globals."""
    amount = "(local.get 0)" if meter_type == "i64" else "(i64.extend_i32_s (local.get 0))"
    return f"""(module
  (global $used (export "used") (mut i64) (i64.const 0))
  (global $limit (export "limit") (mut i64) (i64.const 0))
  (func (export "usegas") (param {meter_type})
    (global.set $used (i64.add (global.get $used) {amount}))
    (if (i64.gt_s (global.get $used) (global.get $limit)) (then unreachable)))
  (func (export "gas_used") (result i32) (i32.wrap_i64 (global.get $used))))"""
