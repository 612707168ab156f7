"""The emscripten host ABI that aos modules import, reimplemented without any host access.

What a guest sees is exactly what ``@permaweb/ao-loader`` gives it, minus everything that would
reach the host: its clock is the loader's deterministic counter (starting where the loader's
runtime initialisation leaves it and advanced by the same calls), the time zone is UTC, the
environment is the runtime's default, stdio is a TTY that discards output, there is no file system
(path syscalls return ``ENOSYS``) and ``system()`` never runs anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import wasmtime

from appliance.compute import timefmt
from appliance.compute.formats import ModuleFormat
from appliance.compute.guest_memory import GuestFault, GuestMemory
from appliance.errors import ModuleError

ENOSYS = 52
EBADF = 8
EINVAL = 28
ESPIPE = 70
ENOTTY = 59
CLOCK_START = 10_004  # the loader's TIME counter (1e4) after its FS initialisation used 4 ticks
_TTY_FDS = (0, 1, 2)
_TERMIOS = (25856, 5, 191, 35387)
_TERMIOS_CC = bytes((3, 28, 127, 21, 4, 0, 1, 0, 17, 19, 26, 0, 18, 15, 23, 22)) + bytes(16)
_WASM_PAGE = 65536


class GuestExit(Exception):
    """The guest called ``exit()``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"program exited with status {code}")
        self.code = code


class GuestAbort(Exception):
    """The guest called ``abort()``."""


class HostImportFailed(Exception):
    """A host function failed (wrong arity, bad arguments): that message's error, never a crash."""


# The first format's runtime imports and exports minified names (its ``asmLibraryArg``).
MINIFIED_IMPORTS = {
    "a": "_emscripten_date_now", "b": "setTempRet0", "c": "fd_close", "d": "__syscall_fcntl64",
    "e": "__syscall_unlinkat", "f": "fd_write", "g": "__syscall_openat", "h": "getTempRet0",
    "i": "_mktime_js", "j": "_tzset_js", "k": "emscripten_memcpy_big",
    "l": "exit", "m": "system", "n": "strftime", "o": "fd_seek", "p": "_emscripten_throw_longjmp",
    "q": "emscripten_resize_heap", "r": "__syscall_lstat64", "s": "__syscall_renameat",
    "t": "__syscall_rmdir", "u": "environ_get", "v": "environ_sizes_get", "w": "__syscall_dup3",
    "x": "invoke_vii", "y": "fd_read", "z": "__syscall_ioctl",
    "A": "_emscripten_get_now_is_monotonic",
    "B": "_gmtime_js", "C": "_localtime_js", "D": "abort",
}
MINIFIED_EXPORTS = {
    "E": "memory", "F": "__wasm_call_ctors", "G": "handle", "H": "main",
    "I": "__indirect_function_table", "J": "malloc", "K": "__errno_location", "L": "setThrew",
    "M": "stackSave", "N": "stackRestore", "O": "stackAlloc",
}
_WASI = frozenset(("fd_close", "fd_write", "fd_seek", "fd_read", "environ_get",
                   "environ_sizes_get"))


def import_name(fmt: ModuleFormat, module: str, name: str) -> tuple[str, str]:
    """An import's (module, name) as the emscripten runtime names it, minified or not."""
    if fmt.minified and module == "a" and name in MINIFIED_IMPORTS:
        real = MINIFIED_IMPORTS[name]
        return ("wasi_snapshot_preview1" if real in _WASI else "env"), real
    return module, name


class EmscriptenHost:
    """Host functions for one instance; call :meth:`attach` once the instance exists."""

    def __init__(self, fmt: ModuleFormat, memory_limit: int) -> None:
        self.fmt = fmt
        self.clock = CLOCK_START
        self.memory_limit = memory_limit
        self.memory_refused = False  # a heap growth past memory_limit was refused (per message)
        self.store: wasmtime.Store | None = None
        self.mem: GuestMemory | None = None
        self._wasm_memory: wasmtime.Memory | None = None
        self._malloc: wasmtime.Func | None = None
        self._free: wasmtime.Func | None = None
        self._temp_ret0 = 0
        self._asyncify: tuple[wasmtime.Func, ...] | None = None
        self._unwound = 0  # the Asyncify data buffer of the unwind in flight
        self._rewinding = False
        self.pending_rewind = False

    def attach(self, store: wasmtime.Store, exports: Any) -> None:
        """Bind to the instantiated module's memory."""
        memory = exports.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise ModuleError("module does not export its memory as 'memory'")
        self.store = store
        self._wasm_memory = memory
        malloc, free = exports.get("malloc"), exports.get("free")
        if isinstance(malloc, wasmtime.Func):
            self._malloc = malloc
        if isinstance(free, wasmtime.Func):
            self._free = free
        self.mem = GuestMemory(store, memory, self.fmt.pointer_size)
        asyncify = [exports.get(name) for name in (
            "asyncify_start_unwind", "asyncify_stop_rewind")]
        funcs = [func for func in asyncify if isinstance(func, wasmtime.Func)]
        if len(funcs) == len(asyncify):
            self._asyncify = tuple(funcs)

    def rewind(self, stop_unwind: wasmtime.Func, start_rewind: wasmtime.Func) -> int:
        """After an unwind: the loader's ``stop_unwind`` then ``start_rewind`` (the stack
        pointer stays where the unwind left it); returns the data pointer to rewind from."""
        assert self.store is not None
        self.pending_rewind = False
        data = self._unwound
        stop_unwind(self.store)
        start_rewind(self.store, data)
        self._rewinding = True
        return data

    # --- import resolution -------------------------------------------------------------------

    def build_imports(self, store: wasmtime.Store, module: wasmtime.Module,
                      in_wasm: Mapping[str, wasmtime.Func]) -> list[wasmtime.Func]:
        """One function per import, typed as the module declares it: ``in_wasm`` first.

        ``in_wasm`` names are ``env`` names, plus ``metering.usegas`` for AO's gas counter.
        """
        externs: list[wasmtime.Func] = []
        missing: list[str] = []
        for imp in module.imports:
            ftype = imp.type
            if not isinstance(ftype, wasmtime.FuncType) or imp.name is None:
                missing.append(f"{imp.module}.{imp.name} (non-function import)")
                continue
            space, name = import_name(self.fmt, imp.module, imp.name)
            if space == "metering" and name == "usegas" and "metering.usegas" in in_wasm:
                externs.append(in_wasm["metering.usegas"])
                continue
            if space == "env" and name in in_wasm:
                externs.append(in_wasm[name])
                continue
            impl = self._resolve(space, name)
            if impl is None:
                missing.append(f"{imp.module}.{imp.name}")
                continue
            externs.append(wasmtime.Func(store, ftype, _guarded(f"{imp.module}.{imp.name}",
                                                                impl)))
        if missing:
            raise ModuleError("module imports what this engine does not provide: "
                              + ", ".join(missing))
        return externs

    def _resolve(self, module: str, name: str) -> Callable[..., Any] | None:
        if name.startswith("__syscall_"):
            syscall: Callable[..., Any] = self._syscalls().get(name[len("__syscall_"):], _enosys)
            return syscall
        if name == "__asyncjs__weavedrive_open":
            return self._weavedrive_open
        if name.startswith("__asyncjs__weavedrive"):
            return _weavedrive_unavailable
        table = self._wasi() if module == "wasi_snapshot_preview1" else self._env()
        return table.get(name)

    def _env(self) -> dict[str, Callable[..., Any]]:
        return {
            "_abort_js": self._abort,
            "abort": self._abort,
            "exit": self._exit,
            "_emscripten_system": _system,
            "system": _system,
            "emscripten_date_now": self._now,
            "emscripten_get_now": self._now,
            "_emscripten_get_now_is_monotonic": lambda: 1,
            "emscripten_get_heap_max": lambda: self.fmt.heap_max,
            "emscripten_resize_heap": self._resize_heap,
            "_tzset_js": self._tzset,
            "_localtime_js": self._localtime,
            "_gmtime_js": self._gmtime,
            "_mktime_js": self._mktime,
            "_timegm_js": self._timegm,
            "strftime": self._strftime,
            "strftime_l": lambda s, n, f, tm, _loc: self._strftime(s, n, f, tm),
            "_emscripten_date_now": self._legacy_date_now,
            "getTempRet0": lambda: self._temp_ret0,
            "setTempRet0": self._set_temp_ret0,
            "__assert_fail": self._assert_fail,
            "_dlinit": lambda *_a: None,
            "_dlopen_js": self._no_dynamic_linking,
            "_dlsym_js": self._no_dynamic_linking,
            "_munmap_js": lambda *_a: -ENOSYS,
            "_mmap_js": lambda *_a: -ENOSYS,
        }

    def _wasi(self) -> dict[str, Callable[..., Any]]:
        return {
            "fd_write": self._fd_write,
            "fd_read": self._fd_read,
            "fd_close": lambda fd: 0 if fd in _TTY_FDS else EBADF,
            "fd_seek": lambda fd, *_a: ESPIPE if fd in _TTY_FDS else EBADF,
            "fd_sync": lambda fd: 0 if fd in _TTY_FDS else EBADF,
            "fd_fdstat_get": self._fd_fdstat_get,
            "environ_sizes_get": self._environ_sizes_get,
            "environ_get": self._environ_get,
            "proc_exit": self._exit,
        }

    def _syscalls(self) -> dict[str, Callable[..., Any]]:
        return {"ioctl": self._ioctl, "fcntl64": self._fcntl}

    # --- control flow ------------------------------------------------------------------------

    def _abort(self, *_args: Any) -> None:
        raise GuestAbort("native code called abort()")

    def _exit(self, code: int) -> None:
        raise GuestExit(code)

    def _assert_fail(self, condition: int, filename: int, line: int, _func: int) -> None:
        assert self.mem is not None
        what = self.mem.cstring(condition).decode("utf-8", "replace") if condition else "?"
        where = self.mem.cstring(filename).decode("utf-8", "replace") if filename else "unknown"
        raise GuestAbort(f"Assertion failed: {what}, at: {where}:{line}")

    def _no_dynamic_linking(self, *_args: Any) -> None:
        raise GuestAbort("dynamic linking is not supported")

    def _set_temp_ret0(self, value: int) -> None:
        self._temp_ret0 = value

    @staticmethod
    def _legacy_date_now() -> float:
        """The emscripten2 runtime's ``_emscripten_date_now`` always answered 0."""
        return 0.0

    # --- memory ------------------------------------------------------------------------------

    def _resize_heap(self, requested: int) -> int:
        assert self.mem is not None and self._wasm_memory is not None and self.store is not None
        requested &= (1 << (64 if self.fmt.memory64 else 32)) - 1
        old = self.mem.size
        cap = min(self.fmt.heap_max, self.memory_limit)
        if requested > cap:
            self.memory_refused = requested > self.memory_limit
            return 0
        for cut_down in (1, 2, 4):
            overgrown = min(old * (1 + 0.2 / cut_down), requested + 100_663_296)
            wanted = max(requested, overgrown)
            new_size = min(cap, math.ceil(wanted / _WASM_PAGE) * _WASM_PAGE)
            pages = (new_size - old) // _WASM_PAGE
            try:
                self._wasm_memory.grow(self.store, pages)
            except wasmtime.WasmtimeError:
                continue
            return 1
        return 0

    # --- WeaveDrive ---------------------------------------------------------------------------

    def _weavedrive_open(self, *_args: Any) -> int:
        """No drive is attached: the loader answers ``null`` (0), after a real Asyncify round
        trip, which we make too: the first call mallocs the loader's data buffer and starts
        unwinding (the engine then rewinds, see :attr:`pending_rewind`); the call made while
        rewinding stops it, frees the buffer and answers. The guest's heap layout and its AO
        gas (the unwind and rewind paths are metered code) are the loader's."""
        size = self.fmt.asyncify_data
        if not size or self._malloc is None or self._free is None:
            return 0
        assert self.store is not None and self.mem is not None
        if self._asyncify is None:  # no Asyncify exports: keep the heap effect only
            pointer = self._malloc(self.store, size)
            if pointer:
                self._free(self.store, pointer)
            return 0
        start_unwind, stop_rewind = self._asyncify
        if self._rewinding:  # the answer (the loader reads Asyncify.state in JS: no gas)
            self._rewinding = False
            stop_rewind(self.store)
            self._free(self.store, self._unwound)
            return 0
        data = self._malloc(self.store, size)
        header = 3 * self.mem.pointer_size
        self.mem.pointer(data, data + header)
        self.mem.pointer(data + self.mem.pointer_size, data + size)
        self.mem.i32(data + 2 * self.mem.pointer_size, 0)  # rewind id of `handle`, the first
        self._unwound = data
        start_unwind(self.store, data)
        self.pending_rewind = True
        return 0

    # --- clock and calendar ------------------------------------------------------------------

    def _now(self) -> float:
        value = self.clock
        self.clock += 1
        return float(value)

    def _time_arg(self, args: tuple[int, ...]) -> tuple[int, int]:
        """Split (time, tm), legalised (time_low, time_high, tm) or (time pointer, tm)."""
        if len(args) == 3:
            low, high, tm = args
            return (low & 0xFFFFFFFF) + high * 4294967296, tm
        if self.fmt.time_by_pointer:
            assert self.mem is not None
            return self.mem.get_i32(args[0]), args[1]
        return args[0], args[1]

    def _write_tm(self, tm_ptr: int, t: timefmt.BrokenDown | None) -> None:
        assert self.mem is not None
        fields = (0,) * 8 if t is None else (t.sec, t.min, t.hour, t.mday, t.mon, t.year, t.wday,
                                             t.yday)
        for i, value in enumerate(fields):
            self.mem.i32(tm_ptr + 4 * i, value)

    def _gmtime(self, *args: int) -> None:
        time, tm_ptr = self._time_arg(args)
        self._write_tm(tm_ptr, timefmt.from_epoch_ms(time * 1000))

    def _localtime(self, *args: int) -> None:
        assert self.mem is not None
        time, tm_ptr = self._time_arg(args)
        self._write_tm(tm_ptr, timefmt.from_epoch_ms(time * 1000))
        if self.fmt.memory64:
            self.mem.i64(tm_ptr + 40, 0)
        else:
            self.mem.i32(tm_ptr + 36, 0)
        self.mem.i32(tm_ptr + 32, 0)

    def _normalise_tm(self, tm_ptr: int) -> int | None:
        assert self.mem is not None
        sec, mi, hour, mday, mon, year = (self.mem.get_i32(tm_ptr + 4 * i) for i in range(6))
        ms = timefmt.to_epoch_ms(year + 1900, mon, mday, hour, mi, sec)
        if ms is None:
            return None
        t = timefmt.from_epoch_ms(ms)
        assert t is not None
        self._write_tm(tm_ptr, t)
        return ms // 1000

    def _mktime(self, tm_ptr: int) -> int:
        assert self.mem is not None
        if self.mem.get_i32(tm_ptr + 32) < 0:
            self.mem.i32(tm_ptr + 32, 0)
        return self._wrap(self._normalise_tm(tm_ptr))

    def _wrap(self, seconds: int | None) -> int:
        if seconds is None:
            return -1
        if not self.fmt.memory64:
            seconds = (seconds + 2**31) % 2**32 - 2**31
        return seconds

    def _timegm(self, tm_ptr: int) -> int:
        return self._wrap(self._normalise_tm(tm_ptr))

    def _tzset(self, timezone: int, daylight: int, std_name: int, *dst: int) -> None:
        """``_tzset_js``: 4 arguments (two name buffers), or the older 3 (a ``tzname`` array
        the runtime fills once with two malloc'd copies of the zone's name as node's ``Date``
        spells UTC). The loader's once-per-instance flag is read here from that array itself,
        so a restored or rolled-back memory behaves as the uninterrupted run did."""
        assert self.mem is not None
        if not dst:
            self._legacy_tzset(timezone, daylight, std_name)
            return
        dst_name = dst[0]
        self.mem.pointer(timezone, 0)
        self.mem.i32(daylight, 0)
        self.mem.write(std_name, b"UTC\0")
        self.mem.write(dst_name, b"UTC\0")

    def _legacy_tzset(self, timezone: int, daylight: int, tzname: int) -> None:
        assert self.mem is not None and self.store is not None
        if self.mem.get_i32(tzname) or self.mem.get_i32(tzname + 4):
            return
        self.mem.i32(timezone, 0)
        self.mem.i32(daylight, 0)
        if self._malloc is None:
            raise GuestAbort("_tzset_js needs the module's malloc export")
        name = b"Coordinated Universal Time\0"
        winter = self._malloc(self.store, len(name))
        if winter:
            self.mem.write(winter, name)
        summer = self._malloc(self.store, len(name))
        if summer:
            self.mem.write(summer, name)
        self.mem.i32(tzname, summer)
        self.mem.i32(tzname + 4, winter)

    def _strftime(self, s: int, maxsize: int, fmt_ptr: int, tm_ptr: int) -> int:
        assert self.mem is not None
        g = self.mem.get_i32
        t = timefmt.BrokenDown(*(g(tm_ptr + 4 * i) for i in range(8)))
        isdst = g(tm_ptr + 32)
        if self.fmt.memory64:
            gmtoff, zone_ptr = self.mem.get_i64(tm_ptr + 40), self.mem.get_pointer(tm_ptr + 48)
        else:
            gmtoff, zone_ptr = g(tm_ptr + 36), self.mem.get_pointer(tm_ptr + 40)
        zone = self.mem.cstring(zone_ptr).decode("utf-8", "replace") if zone_ptr else ""
        pattern = self.mem.cstring(fmt_ptr).decode("utf-8", "replace")
        try:
            text = timefmt.strftime(pattern, t, isdst, gmtoff, zone)
        except IndexError as exc:
            raise GuestAbort(f"strftime on an invalid struct tm: {exc}") from None
        data = text.encode("utf-8", "surrogatepass") + b"\0"
        if len(data) > maxsize:
            return 0
        self.mem.write(s, data)
        return len(data) - 1

    # --- stdio -------------------------------------------------------------------------------

    def _fd_write(self, fd: int, iov: int, iovcnt: int, pnum: int) -> int:
        assert self.mem is not None
        if fd not in _TTY_FDS:
            return EBADF
        step = self.mem.pointer_size
        total = 0
        for i in range(iovcnt):
            length = self.mem.get_pointer(iov + i * 2 * step + step)
            if length:
                self.clock += 1  # the loader's TTY write stamps the node with Date.now()
            total += length
        self.mem.pointer(pnum, total)
        return 0

    def _fd_read(self, fd: int, _iov: int, _iovcnt: int, pnum: int) -> int:
        assert self.mem is not None
        if fd not in _TTY_FDS:
            return EBADF
        self.mem.pointer(pnum, 0)
        return 0

    def _fd_fdstat_get(self, fd: int, pbuf: int) -> int:
        assert self.mem is not None
        if fd not in _TTY_FDS:
            return EBADF
        self.mem.u8(pbuf, 2)
        self.mem.i16(pbuf + 2, 0)
        self.mem.i64(pbuf + 8, 0)
        self.mem.i64(pbuf + 16, 0)
        return 0

    def _environ_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        assert self.mem is not None
        environ = self.fmt.environ
        self.mem.pointer(count_ptr, len(environ))
        self.mem.pointer(size_ptr, sum(len(entry) + 1 for entry in environ))
        return 0

    def _environ_get(self, environ_ptr: int, buf: int) -> int:
        """The runtime's environment strings: an array of pointers, the strings in ``buf``."""
        assert self.mem is not None
        for i, entry in enumerate(self.fmt.environ):
            self.mem.pointer(environ_ptr + i * self.mem.pointer_size, buf)
            data = entry.encode() + b"\0"
            self.mem.write(buf, data)
            buf += len(data)
        return 0

    def _vararg_pointer(self, varargs: int) -> int:
        assert self.mem is not None
        return self.mem.get_pointer(varargs)

    def _ioctl(self, fd: int, op: int, varargs: int) -> int:
        assert self.mem is not None
        if fd not in _TTY_FDS:
            return -EBADF
        if op == 21505:  # TCGETS
            argp = self._vararg_pointer(varargs)
            for i, flag in enumerate(_TERMIOS):
                self.mem.i32(argp + 4 * i, flag)
            self.mem.write(argp + 17, _TERMIOS_CC)
            return 0
        if op == 21523:  # TIOCGWINSZ
            argp = self._vararg_pointer(varargs)
            self.mem.i16(argp, 24)
            self.mem.i16(argp + 2, 80)
            return 0
        if op == 21519:  # TIOCGPGRP
            self.mem.i32(self._vararg_pointer(varargs), 0)
            return 0
        if op in (21506, 21507, 21508, 21509, 21510, 21511, 21512, 21515, 21524):
            return 0
        return -EINVAL

    def _fcntl(self, fd: int, cmd: int, _varargs: int) -> int:
        if fd not in _TTY_FDS:
            return -EBADF
        if cmd in (1, 2, 6, 7):
            return 0
        if cmd == 3:
            return 1 if fd else 0  # O_WRONLY for stdout/stderr streams, O_RDONLY for stdin
        return -EINVAL if cmd != 0 else -ENOSYS


def _guarded(label: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    """``impl``, with any failure but the guest's own exit/abort turned into
    :class:`HostImportFailed` (a wrong arity is a ``TypeError`` here, never a crash)."""

    def call(*args: Any) -> Any:
        try:
            return impl(*args)
        except (GuestExit, GuestAbort, GuestFault, HostImportFailed):
            raise
        except Exception as exc:  # noqa: BLE001 - any host failure is the message's error
            raise HostImportFailed(f"host function {label} failed: "
                                   f"{type(exc).__name__}: {exc}") from None

    return call


def _enosys(*_args: Any) -> int:
    return -ENOSYS


def _system(command: int) -> int:
    """``system()``: report that no shell exists; never run anything on the host."""
    return 0 if command == 0 else -ENOSYS


def _weavedrive_unavailable(*_args: Any) -> int:
    return -1
