"""Linux ``_IOWR`` request numbers and pinned buffers for the guest-device ioctls."""

from __future__ import annotations

import ctypes

_IOC_WRITE_READ = 3


def iowr(kind: str, number: int, size: int) -> int:
    """The ``_IOWR(kind, number, size)`` request code (asm-generic/ioctl.h layout)."""
    return (_IOC_WRITE_READ << 30) | (size << 16) | (ord(kind) << 8) | number


def buffer(size: int, data: bytes = b"") -> ctypes.Array[ctypes.c_char]:
    """A zeroed C buffer of ``size`` bytes starting with ``data``, whose address stays fixed."""
    buf = ctypes.create_string_buffer(size)
    ctypes.memmove(buf, data, len(data))
    return buf


def address(buf: ctypes.Array[ctypes.c_char]) -> int:
    """The address of ``buf`` for embedding in an ioctl argument structure."""
    return ctypes.addressof(buf)
