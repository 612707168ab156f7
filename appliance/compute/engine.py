"""wasmtime-backed compute engine: compiled-module cache, resident process instances, rollback."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import wasmtime

from appliance.compute import jsjson, metering, trampolines
from appliance.compute.abi import (
    MINIFIED_EXPORTS,
    EmscriptenHost,
    GuestAbort,
    GuestExit,
    HostImportFailed,
    import_name,
)
from appliance.compute.fastcall import integer_caller
from appliance.compute.formats import ModuleFormat
from appliance.compute.guest_memory import GuestFault
from appliance.compute.image import ImageInfo, MemoryImage, write_image
from appliance.compute.limits import ComputeLimits
from appliance.errors import EvaluationError, ModuleError
from attestation.atomic import write_atomically

EPOCH_TICK_SECONDS = 0.05
STACK_COOKIE = (0x02135467).to_bytes(4, "little") + (0x89BACDFE).to_bytes(4, "little")
NULL_COOKIE = b"emsc"  # 0x63736d65, what a null-pointer read gives the guest under the loader
OUT_OF_GAS = "Error: out of gas!"  # the loader's thrown Error('out of gas!'), as the CU records it
WASMTIME_VERSION = _dist_version("wasmtime")
_LEGACY_EH_HINT = (
    "the module uses legacy wasm exception-handling instructions, which this runtime does not "
    "execute; convert it once with binaryen: "
    "wasm-opt --translate-to-exnref -all in.wasm -o out.wasm"
)


@dataclass(frozen=True)
class Snapshot:
    """Everything a process's state consists of between messages: linear memory and the clock."""

    memory: bytes
    clock: int

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the raw memory (the AO checkpoint ``SHA-256`` tag)."""
        return hashlib.sha256(self.memory).hexdigest()


@dataclass(frozen=True)
class EvalResult:
    """One message's result in the legacy CU's shape; ``error`` is ``None`` on success.

    ``gas_used`` is AO's gas, as the loader reports it: the metering counter for metered modules,
    0 for plain ones and for a message that threw. ``fuel_used`` is the node's own safety
    counter (wasmtime fuel), for metrics only: it is not part of the result.
    """

    output: Any
    messages: list[Any]
    spawns: list[Any]
    assignments: list[Any]
    error: Any
    gas_used: int
    fuel_used: int = 0

    def as_json(self) -> dict[str, Any]:
        """The result object with AO's key names, in the order the run command prints them."""
        return {
            "Output": self.output,
            "Messages": self.messages,
            "Spawns": self.spawns,
            "Assignments": self.assignments,
            "Error": self.error,
            "GasUsed": self.gas_used,
        }


@dataclass(frozen=True)
class LoadedModule:
    """A compiled module, its format, its content hash and its in-wasm import trampolines.

    ``gas`` is AO's gas counter (:func:`metering.gas_wat`) when the module is metered (its
    format's rewrite, or ``metering.usegas`` imported at build time) or asks ``metering_gasUsed``.
    """

    module: wasmtime.Module
    fmt: ModuleFormat
    sha256: str
    forwarder: wasmtime.Module
    implementation: wasmtime.Module
    slot_names: tuple[str, ...]
    landing_pads: bool
    dyncalls: tuple[str, ...]
    gas: wasmtime.Module | None = None
    metered: bool = False

    def export(self, name: str) -> str:
        """The name the module really exports for runtime name ``name`` (minified formats)."""
        if self.fmt.minified:
            for short, full in MINIFIED_EXPORTS.items():
                if full == name:
                    return short
        return name


class _EpochTicker:
    """Advances an engine's epoch on a daemon thread so wall-clock deadlines can fire."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
        thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(EPOCH_TICK_SECONDS)
            self._engine.increment_epoch()


class ComputeEngine:
    """Compiles modules (cached on disk by content hash) and creates process instances."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        config = wasmtime.Config()
        config.wasm_memory64 = True
        config.wasm_exceptions = True
        config.consume_fuel = True
        config.epoch_interruption = True
        config.cranelift_opt_level = "speed"
        self.engine = wasmtime.Engine(config)
        self.cache_dir = cache_dir
        self._ticker = _EpochTicker(self.engine)
        self._loaded: dict[tuple[str, str], LoadedModule] = {}
        self._lock = threading.Lock()
        self.compiled = 0
        """How many modules this engine compiled from wasm (not from its native-code cache)."""

    def load(self, wasm: bytes, fmt: ModuleFormat) -> LoadedModule:
        """Compile ``wasm`` (or load its cached native code) for ``fmt``."""
        digest = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            cached = self._loaded.get((digest, fmt.name))
            if cached is None:
                meter_type = fmt.meter_type
                if meter_type is None:
                    module = self._compile(lambda: wasm, digest)
                else:
                    module = self._compile(lambda: metering.meter_module(wasm, meter_type),
                                           f"{digest}-aogas{metering.REWRITE_VERSION}")
                slots = trampolines.hot_imports(
                    module, lambda space, name: import_name(fmt, space, name),
                    fmt.invoke_via_dyncall)
                cached = LoadedModule(
                    module, fmt, digest,
                    wasmtime.Module(self.engine, trampolines.forwarder_wat(slots)),
                    wasmtime.Module(self.engine, trampolines.implementation_wat(
                        slots, fmt.memory64, table64=False)),
                    tuple(slot.name for slot in slots), trampolines.needs_landing_pads(slots),
                    tuple(trampolines.dyncall_names(slots)),
                    *self._gas_module(module))
                self._check_shape(cached)
                self._loaded[(digest, fmt.name)] = cached
        return cached

    def _gas_module(self, module: wasmtime.Module) -> tuple[wasmtime.Module | None, bool]:
        """AO's gas counter for ``module``, and whether the module pays gas into it."""
        usegas = next((imp for imp in module.imports if (imp.module, imp.name)
                       == ("metering", "usegas")), None)
        asks = any(imp.name == "metering_gasUsed" for imp in module.imports)
        if usegas is None and not asks:
            return None, False
        meter_type = "i32"
        if usegas is not None:
            ftype = usegas.type
            if (not isinstance(ftype, wasmtime.FuncType) or len(ftype.params) != 1
                    or ftype.results or str(ftype.params[0]) not in ("i32", "i64")):
                raise ModuleError("metering.usegas must be a function of one i32 or i64")
            meter_type = str(ftype.params[0])
        return wasmtime.Module(self.engine, metering.gas_wat(meter_type)), usegas is not None

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{digest}-wasmtime{WASMTIME_VERSION}.cwasm"

    def _compile(self, wasm: Callable[[], bytes], key: str) -> wasmtime.Module:
        """Compile ``wasm()`` (produced only when the native-code cache misses)."""
        path = self._cache_path(key)
        if path is not None and path.is_file():
            try:
                return wasmtime.Module.deserialize_file(self.engine, str(path))
            except wasmtime.WasmtimeError:
                path.unlink(missing_ok=True)
        try:
            module = wasmtime.Module(self.engine, wasm())
            self.compiled += 1
        except wasmtime.WasmtimeError as exc:
            text = str(exc)
            if "legacy" in text and "exception" in text:
                raise ModuleError(_LEGACY_EH_HINT) from None
            raise ModuleError(f"invalid wasm module: {text.splitlines()[0]}") from None
        if path is not None:
            write_atomically(path, module.serialize())
        return module

    @staticmethod
    def _check_shape(loaded: LoadedModule) -> None:
        exports = {e.name: e.type for e in loaded.module.exports}
        if loaded.fmt.minified:
            exports.update({full: exports[short] for short, full in MINIFIED_EXPORTS.items()
                            if short in exports})
        memory = exports.get("memory")
        if not isinstance(memory, wasmtime.MemoryType):
            raise ModuleError("module exports no linear memory named 'memory'")
        if memory.is_64 != loaded.fmt.memory64:
            width = "64" if memory.is_64 else "32"
            raise ModuleError(f"module has a wasm{width} memory but format {loaded.fmt.name!r} "
                              f"says otherwise")
        for name, legacy in (("handle", "handle"), ("emscripten_stack_get_current", "stackSave"),
                             ("_emscripten_stack_restore", "stackRestore"),
                             ("_emscripten_stack_alloc", "stackAlloc")):
            if not (isinstance(exports.get(name), wasmtime.FuncType)
                    or isinstance(exports.get(legacy), wasmtime.FuncType)):
                raise ModuleError(f"module does not export the function {name!r} the AO loader "
                                  f"contract needs")

    def instantiate(self, loaded: LoadedModule, limits: ComputeLimits,
                    state: Snapshot | MemoryImage | None = None) -> ProcessInstance:
        """A resident instance of ``loaded``, fresh or restored from ``state``.

        An instance restored from an image owns it (its rollback base) and closes it; when the
        restore fails, the image stays open and the caller's to close.
        """
        return ProcessInstance(self, loaded, limits, state)


class ProcessInstance:
    """One process's resident wasm instance; evaluates messages serially.

    A failed message (trap, limit, ``ok: false`` or a truthy ``Error``) leaves the state exactly
    as before it: the instance is rebuilt from the last base snapshot and the messages since are
    replayed, which determinism makes exact. A base is refreshed every ``rollback_window``
    successful messages, so a failure costs at most that many replays. After a restore from
    an image, the image file is the base until the first refresh.
    """

    def __init__(self, engine: ComputeEngine, loaded: LoadedModule, limits: ComputeLimits,
                 state: Snapshot | MemoryImage | None) -> None:
        self._engine = engine
        self.loaded = loaded
        self.limits = limits
        self._base: bytes | bytearray | MemoryImage | None = None
        self._base_clock = 0
        self._aborted = False  # the last call stopped the guest mid-flight (trap, limit, abort)
        self._log: list[tuple[bytes, bytes]] = []
        self._build(state)
        if isinstance(state, Snapshot):
            self._base, self._base_clock = state.memory, state.clock  # immutable: no copy
        elif state is not None:
            self._base, self._base_clock = state, state.clock

    # --- lifecycle ---------------------------------------------------------------------------

    def _build(self, state: Snapshot | MemoryImage | None) -> None:
        """A new store and instance, fresh or loaded with ``state``.

        wasmtime-py frees a store's memory only when the store is closed (its host functions
        keep it reachable otherwise), so a store is closed on failure, on rebuild and when the
        instance is closed or collected.
        """
        store = wasmtime.Store(self._engine.engine)
        try:
            self._instantiate(store, state)
        except BaseException:
            store.close()
            raise
        self._close_store = weakref.finalize(self, store.close)

    def _instantiate(self, store: wasmtime.Store, state: Snapshot | MemoryImage | None) -> None:
        store.set_limits(memory_size=self.limits.memory_bytes)
        host = EmscriptenHost(self.loaded.fmt, self.limits.memory_bytes)
        self._gas: tuple[wasmtime.Global, wasmtime.Global] | None = None
        try:
            forwarder = wasmtime.Instance(store, self.loaded.forwarder, []).exports(store)
            in_wasm = {name: _func(forwarder, name) for name in
                       (*self.loaded.slot_names, trampolines.LONGJMP)}
            if self.loaded.gas is not None:
                gas = wasmtime.Instance(store, self.loaded.gas, []).exports(store)
                in_wasm["metering.usegas"] = _func(gas, "usegas")
                in_wasm["metering_gasUsed"] = _func(gas, "gas_used")
                used, limit = gas["used"], gas["limit"]
                assert isinstance(used, wasmtime.Global) and isinstance(limit, wasmtime.Global)
                self._gas = (used, limit)
            instance = wasmtime.Instance(store, self.loaded.module, host.build_imports(
                store, self.loaded.module, in_wasm))
            exports = _named_exports(self.loaded, instance.exports(store))
            self._bind_trampolines(store, forwarder, exports)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise ModuleError(f"cannot instantiate module: {exc}") from None
        host.attach(store, exports)
        self._store, self._host, self._exports = store, host, exports
        self._stack_restore = _func(exports, "_emscripten_stack_restore", "stackRestore")
        self._arm(self.limits.fuel)
        try:
            self._initialise(exports, state)
        except (wasmtime.Trap, wasmtime.WasmtimeError, GuestAbort, GuestFault,
                HostImportFailed) as exc:
            if self._out_of_gas():
                raise ModuleError("the module runs out of gas (Compute-Limit) while it "
                                  "initialises") from None
            raise ModuleError(f"module initialisation failed: {exc}") from None
        self._sp0: int = _func(exports, "emscripten_stack_get_current", "stackSave")(store)
        end = exports.get("emscripten_stack_get_end")
        self._stack_end: int = end(store) if isinstance(end, wasmtime.Func) else 0

    def _initialise(self, exports: Mapping[str, Any], state: Snapshot | MemoryImage | None) -> None:
        """Run the runtime's start-up (constructors, ``main()`` where the format's runtime
        calls it), or load ``state`` instead."""
        store = self._store
        self._refill()
        init = exports.get("emscripten_stack_init")
        if isinstance(init, wasmtime.Func):
            init(store)
        if state is None:
            self._write_stack_cookie(exports)
            ctors = exports.get("__wasm_call_ctors")
            if isinstance(ctors, wasmtime.Func):
                ctors(store)
            self._call_main(exports)
            return
        self._lower_stack_for_argv(exports)
        if isinstance(state, Snapshot):
            self._grow_to(len(state.memory))
            assert self._host.mem is not None
            self._host.mem.write(0, state.memory)
            self._host.clock = state.clock
        else:
            self._load_image(state)

    def _write_stack_cookie(self, exports: Mapping[str, Any]) -> None:
        """The runtime's ``writeStackCookie()`` (the loader's builds have assertions on)."""
        end = exports.get("emscripten_stack_get_end")
        if not self.loaded.fmt.stack_cookie or not isinstance(end, wasmtime.Func):
            return
        mem = self._host.mem
        assert mem is not None
        bottom = int(end(self._store)) or 4
        mem.write(bottom, STACK_COOKIE)
        mem.write(0, NULL_COOKIE)

    def _call_main(self, exports: Mapping[str, Any]) -> None:
        """``main(argc, argv)`` as the format's runtime calls it at start-up."""
        main = exports.get("main")
        if self.loaded.fmt.main_argv is None or not isinstance(main, wasmtime.Func):
            return
        argc, argv = self._lower_stack_for_argv(exports)
        with contextlib.suppress(GuestExit):
            main(self._store, argc, argv)

    def _lower_stack_for_argv(self, exports: Mapping[str, Any]) -> tuple[int, int]:
        """Allocate ``main``'s argv strings on the stack, which the runtime leaves lowered;
        a restored instance needs the same stack pointer as one that ran ``main``."""
        argv_strings = self.loaded.fmt.main_argv
        store, mem = self._store, self._host.mem
        assert mem is not None
        argc = argv = 0
        if argv_strings and isinstance(exports.get("main"), wasmtime.Func):
            save = _func(exports, "emscripten_stack_get_current", "stackSave")
            sp = save(store)
            argv = (sp - 4 * (len(argv_strings) + 1)) & ~15
            sp, pointers = argv, []
            for text in argv_strings:
                data = text.encode() + b"\0"
                sp = (sp - len(data)) & ~15
                mem.write(sp, data)
                pointers.append(sp)
            self._stack_restore(store, sp)
            for i, pointer in enumerate([*pointers, 0]):
                mem.i32(argv + 4 * i, pointer)
            argc = len(argv_strings)
        return argc, argv

    def _bind_trampolines(self, store: wasmtime.Store, forwarder: Any, exports: Any) -> None:
        """Instantiate the in-wasm import implementations and late-bind the forwarder to them."""
        wanted = [exports["memory"], _func(exports, "handle"),
                  _func(exports, "_emscripten_stack_restore", "stackRestore"),
                  _func(exports, "emscripten_stack_get_current", "stackSave"),
                  _func(exports, "_emscripten_stack_alloc", "stackAlloc")]
        if self.loaded.landing_pads:
            wanted += [exports["__indirect_function_table"], _func(exports, "setThrew"),
                       forwarder["longjmp"]]
        wanted += [_func(exports, name) for name in self.loaded.dyncalls]
        impl = wasmtime.Instance(store, self.loaded.implementation, wanted).exports(store)
        late = forwarder["late"]
        for i in range(len(self.loaded.slot_names)):
            late.set(store, i, impl[f"s{i}"])
        self._run, self.fast_call = integer_caller(store, _func(impl, "run"))

    def _grow_to(self, size: int) -> None:
        """Grow the fresh instance's memory to the ``size`` bytes of a saved state."""
        assert self._host.mem is not None
        missing = size - self._host.mem.size
        if missing < 0 or size % 65536:
            raise EvaluationError(
                f"snapshot of {size} bytes does not fit this module's memory "
                f"(initially {self._host.mem.size} bytes)")
        if missing:
            try:
                self._memory_extern().grow(self._store, missing // 65536)
            except wasmtime.WasmtimeError:
                raise EvaluationError("snapshot is larger than the memory limit") from None

    def _load_image(self, image: MemoryImage) -> None:
        """Read ``image`` straight into the fresh instance's memory (verified)."""
        memory = self._host.mem
        assert memory is not None
        initial = memory.size
        self._grow_to(image.raw_size)
        memory.advise_huge_pages()
        image.load(memory.address(), memory.size, zero_below=initial)
        self._host.clock = image.clock

    def _memory_extern(self) -> wasmtime.Memory:
        host_memory = self._host._wasm_memory
        assert host_memory is not None
        return host_memory

    def snapshot(self) -> Snapshot:
        """Copy of the current state (raw memory + clock) for checkpoints and restores."""
        assert self._host.mem is not None
        return Snapshot(self._host.mem.read(0, self._host.mem.size), self._host.clock)

    def memory_sha256(self) -> str:
        """Hex SHA-256 of the current raw memory."""
        return self.snapshot().sha256

    def write_image(self, path: Path) -> ImageInfo:
        """Write the current state to ``path`` as a memory image, straight from the memory."""
        assert self._host.mem is not None
        return write_image(self._host.mem.view(), self._host.clock, path)

    def resident_bytes(self) -> int:
        """RAM this instance holds: its linear memory plus the rollback base when that is a
        copy in memory (a base still read from its image file costs page cache, not RAM)."""
        assert self._host.mem is not None
        base = len(self._base) if isinstance(self._base, bytes | bytearray) else 0
        return self._host.mem.size + base

    def close(self) -> None:
        """Free the instance's memory and files; it must not be used afterwards."""
        self._drop_image()
        self._base = None
        self._close_store()

    def _drop_image(self) -> None:
        if isinstance(self._base, MemoryImage):
            self._base.close()

    # --- evaluation --------------------------------------------------------------------------

    def _refill(self) -> None:
        """The loader's ``gas.refill()``: AO's gas counter starts at 0 for every message."""
        if self._gas is not None:
            used, limit = self._gas
            used.set_value(self._store, 0)
            limit.set_value(self._store, min(self.limits.gas, 2**63 - 1))

    def _gas_used(self) -> int:
        return int(self._gas[0].value(self._store)) if self.loaded.metered and self._gas else 0

    def _out_of_gas(self) -> bool:
        if self._gas is None:
            return False
        used, limit = self._gas
        return bool(used.value(self._store) > limit.value(self._store))

    def _arm(self, fuel: int) -> None:
        self._refill()
        self._store.set_fuel(fuel)
        self._store.set_epoch_deadline(
            max(1, round(self.limits.wall_clock_seconds / EPOCH_TICK_SECONDS)))

    def handle(self, msg: Mapping[str, Any], env: Mapping[str, Any]) -> EvalResult:
        """Evaluate one message (objects are serialised as ``JSON.stringify`` would)."""
        return self.handle_json(jsjson.stringify(msg), jsjson.stringify(env))

    def handle_json(self, msg_json: bytes, env_json: bytes) -> EvalResult:
        """Evaluate one message given as JSON text; roll back on any failure."""
        result = self._evaluate(msg_json, env_json)
        if result.error is not None:
            self._rollback()
            return result
        self._log.append((msg_json, env_json))
        if len(self._log) >= self.limits.rollback_window:
            self._take_base()
        return result

    def dry_run_json(self, msg_json: bytes, env_json: bytes) -> EvalResult:
        """Evaluate one message and then discard every effect it had on the state."""
        result = self._evaluate(msg_json, env_json)
        self._rollback()
        return result

    def _evaluate(self, msg_json: bytes, env_json: bytes) -> EvalResult:
        self._arm(self.limits.fuel)
        self._host.memory_refused = False
        try:
            response = self._call(msg_json, env_json)
            result = _parse_response(response, self._gas_used())
        except EvaluationError as exc:
            result = EvalResult(None, [], [], [], str(exc), 0)
        result = replace(result, fuel_used=self.limits.fuel - self._store.get_fuel())
        if result.error is not None and self._host.memory_refused:
            # the guest reports a refused allocation in its own words ("not enough memory"):
            # say which limit it ran into
            return replace(result, error=(
                f"memory limit exceeded ({self.limits.memory_bytes} bytes): {result.error}"))
        return result

    def _take_base(self) -> None:
        """Copy memory into the reused base buffer (its pages stay mapped: a plain memcpy)."""
        mem = self._host.mem
        assert mem is not None
        if not isinstance(self._base, bytearray) or len(self._base) != mem.size:
            self._drop_image()
            self._base = bytearray(mem.size)
        mem.read_into(0, self._base)
        self._base_clock = self._host.clock
        self._log = []

    def _call(self, msg_json: bytes, env_json: bytes) -> bytes:
        self._aborted = False
        store = self._store
        mem = self._host.mem
        assert mem is not None
        if self.loaded.fmt.wide_strings:
            msg_size, env_size = (4 * _utf16_length(msg_json) + 1,
                                  4 * _utf16_length(env_json) + 1)
        else:
            msg_size, env_size = len(msg_json) + 1, len(env_json) + 1
        msg_ptr = (self._sp0 - msg_size) & ~15  # where the guest's stackAlloc puts them
        env_ptr = (msg_ptr - env_size) & ~15
        if env_ptr < self._stack_end:
            raise EvaluationError(
                f"message and env ({len(msg_json) + len(env_json)} bytes) do not fit the "
                f"module's stack ({self._sp0 - self._stack_end} bytes)")
        mem.write(msg_ptr, msg_json + b"\0")
        mem.write(env_ptr, env_json + b"\0")
        try:
            ret = self._run(store, msg_size, env_size)
            while self._host.pending_rewind:
                ret = self._rewind()
            self._stack_restore(store, self._sp0)
            limit = self.limits.max_response_bytes
            try:
                return mem.cstring(ret, limit + 1)
            except GuestFault:
                if mem.size - ret > limit:
                    raise EvaluationError(
                        f"response exceeds the limit of {limit} bytes") from None
                raise
        except (wasmtime.Trap, wasmtime.WasmtimeError, GuestExit, GuestAbort, GuestFault,
                HostImportFailed) as exc:
            self._aborted = True
            out_of_gas = self._out_of_gas()
            with contextlib.suppress(wasmtime.Trap, wasmtime.WasmtimeError):
                self._stack_restore(store, self._sp0)
            if out_of_gas:
                raise EvaluationError(OUT_OF_GAS) from None
            if isinstance(exc, wasmtime.Trap):
                raise EvaluationError(_describe_trap(exc, self.limits)) from None
            if isinstance(exc, wasmtime.WasmtimeError):
                raise EvaluationError(f"wasm execution failed: {exc}") from None
            raise EvaluationError(str(exc)) from None

    def _rewind(self) -> int:
        """Resume ``handle`` after an Asyncify unwind (the loader's ``doRewind``)."""
        exports = self._exports
        self._host.rewind(_func(exports, "asyncify_stop_unwind"),
                          _func(exports, "asyncify_start_rewind"))
        ret: int = _func(exports, "handle")(self._store, 0, 0)
        return ret

    def _rollback(self) -> None:
        mem = self._host.mem
        assert mem is not None
        base = self._base
        in_place = not self._aborted  # a guest stopped mid-flight may leave its globals broken
        if in_place and isinstance(base, MemoryImage) and base.raw_size == mem.size:
            base.load(mem.address(), mem.size, zero_below=mem.size)
            self._host.clock = self._base_clock
        elif in_place and isinstance(base, bytes | bytearray) and len(base) == mem.size:
            mem.write(0, base)
            self._host.clock = self._base_clock
        else:
            self._close_store()
            self._build(Snapshot(bytes(base), self._base_clock)
                        if isinstance(base, bytes | bytearray) else base)
        log, self._log = self._log, []
        for msg_json, env_json in log:
            self._arm(self.limits.fuel)
            try:
                ok = _parse_response(self._call(msg_json, env_json), 0).error is None
            except EvaluationError:
                ok = False
            if not ok:
                raise EvaluationError("replay after rollback diverged: evaluation is not "
                                      "deterministic for this module")
        if log:
            self._take_base()


def _utf16_length(utf8: bytes) -> int:
    """``str.length`` in JS of the text ``utf8`` encodes (UTF-16 code units)."""
    if utf8.isascii():
        return len(utf8)
    text = utf8.decode("utf-8", "surrogatepass")
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _named_exports(loaded: LoadedModule, exports: Any) -> dict[str, Any]:
    """The instance's exports by runtime name (minified formats export ``E``, ``F``...)."""
    named = {name: exports[name] for name in (e.name for e in loaded.module.exports)}
    if loaded.fmt.minified:
        named.update({full: named[short] for short, full in MINIFIED_EXPORTS.items()
                      if short in named})
    return named


def _func(exports: Any, name: str, legacy_name: str | None = None) -> wasmtime.Func:
    func = exports.get(name) or (exports.get(legacy_name) if legacy_name else None)
    if not isinstance(func, wasmtime.Func):
        raise ModuleError(f"module does not export the function {name!r}")
    return func


def _describe_trap(trap: wasmtime.Trap, limits: ComputeLimits) -> str:
    code = trap.trap_code
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return f"compute limit exceeded (out of gas: {limits.fuel} fuel)"
    if code == wasmtime.TrapCode.INTERRUPT:
        return f"wall-clock limit exceeded ({limits.wall_clock_seconds:g} s)"
    if code is not None:
        return f"wasm trap: {code.name.lower().replace('_', ' ')}"
    return f"wasm trap: {str(trap.message).splitlines()[0] if trap.message else 'unknown'}"


def _parse_response(raw: bytes, gas: int) -> EvalResult:
    try:
        parsed = json.loads(raw.decode("utf-8", "replace"))
    except json.JSONDecodeError:
        raise EvaluationError("module returned a response that is not JSON") from None
    if not isinstance(parsed, dict) or "ok" not in parsed:
        raise EvaluationError("module response lacks the {ok, response} envelope")
    response = parsed.get("response")
    if not parsed["ok"]:  # the loader throws the response: the CU records no gas for it
        return EvalResult(None, [], [], [], response if response is not None else "error", 0)
    if not isinstance(response, dict):
        raise EvaluationError("module response is not an object")
    error = response.get("Error") or None
    return EvalResult(response.get("Output"), response.get("Messages") or [],
                      response.get("Spawns") or [], response.get("Assignments") or [], error, gas)
