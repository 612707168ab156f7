"""Bounds-checked access to a guest's linear memory (little-endian, wasm32 or wasm64 pointers)."""

from __future__ import annotations

import ctypes
import struct
import sys

import wasmtime

_libc = ctypes.CDLL(None)
_libc.memchr.restype = ctypes.c_void_p
_libc.memchr.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
_MADV_HUGEPAGE = 14
_madvise = getattr(_libc, "madvise", None) if sys.platform == "linux" else None
if _madvise is not None:
    _madvise.restype = ctypes.c_int
    _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class GuestFault(Exception):
    """The guest handed the host a pointer or length outside its linear memory."""


class GuestMemory:
    """A view of one instance's exported memory; re-reads its base after every growth."""

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory, pointer_size: int) -> None:
        self._store = store
        self._memory = memory
        self._ptr_fmt = "<Q" if pointer_size == 8 else "<I"
        self.pointer_size = pointer_size

    @property
    def size(self) -> int:
        """Current size in bytes."""
        return int(self._memory.data_len(self._store))

    def _base(self, addr: int, length: int) -> int:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise GuestFault(f"guest memory access out of bounds: {addr:#x}+{length}")
        return ctypes.addressof(self._memory.data_ptr(self._store).contents) + addr

    def address(self) -> int:
        """Host address of byte 0 (valid until the memory next grows)."""
        return self._base(0, 0)

    def view(self) -> memoryview:
        """A zero-copy view of the whole memory (valid until the memory next grows)."""
        size = self.size
        return memoryview((ctypes.c_ubyte * size).from_address(self._base(0, size))).cast("B")

    def advise_huge_pages(self) -> None:
        """Ask Linux to back the memory with transparent huge pages (best effort).

        Filling fresh memory then costs one page fault per 2 MiB instead of per 4 KiB.
        """
        if _madvise is not None:
            _madvise(self.address(), self.size, _MADV_HUGEPAGE)

    def read(self, addr: int, length: int) -> bytes:
        """Copy ``length`` bytes from ``addr``."""
        return ctypes.string_at(self._base(addr, length), length)

    def read_into(self, addr: int, buffer: bytearray) -> None:
        """Fill ``buffer`` from guest memory at ``addr`` without allocating."""
        target = (ctypes.c_char * len(buffer)).from_buffer(buffer)
        ctypes.memmove(target, self._base(addr, len(buffer)), len(buffer))

    def write(self, addr: int, data: bytes | bytearray) -> None:
        """Copy ``data`` into guest memory at ``addr``."""
        source = (ctypes.c_char * len(data)).from_buffer(data) if isinstance(
            data, bytearray) else data
        ctypes.memmove(self._base(addr, len(data)), source, len(data))

    def move(self, dest: int, src: int, length: int) -> None:
        """``memmove`` inside guest memory."""
        ctypes.memmove(self._base(dest, length), self._base(src, length), length)

    def cstring(self, addr: int, limit: int | None = None) -> bytes:
        """Bytes of the NUL-terminated string at ``addr`` (never reads past the memory's end)."""
        span = self.size - addr if limit is None else min(limit, self.size - addr)
        start = self._base(addr, max(span, 0))
        end = _libc.memchr(start, 0, span)
        if end is None:
            raise GuestFault(f"unterminated string at {addr:#x}")
        return ctypes.string_at(start, end - start)

    def u8(self, addr: int, value: int) -> None:
        """Store one byte."""
        self.write(addr, bytes((value & 0xFF,)))

    def i16(self, addr: int, value: int) -> None:
        """Store a 16-bit integer."""
        self.write(addr, struct.pack("<H", value & 0xFFFF))

    def i32(self, addr: int, value: int) -> None:
        """Store a 32-bit integer (two's complement)."""
        self.write(addr, struct.pack("<I", value & 0xFFFFFFFF))

    def i64(self, addr: int, value: int) -> None:
        """Store a 64-bit integer (two's complement)."""
        self.write(addr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def get_i32(self, addr: int) -> int:
        """Load a signed 32-bit integer."""
        return int(struct.unpack("<i", self.read(addr, 4))[0])

    def get_i64(self, addr: int) -> int:
        """Load a signed 64-bit integer."""
        return int(struct.unpack("<q", self.read(addr, 8))[0])

    def pointer(self, addr: int, value: int) -> None:
        """Store a guest pointer or size_t."""
        self.write(addr, struct.pack(self._ptr_fmt, value))

    def get_pointer(self, addr: int) -> int:
        """Load a guest pointer or size_t."""
        return int(struct.unpack(self._ptr_fmt, self.read(addr, self.pointer_size))[0])
