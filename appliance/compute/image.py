"""Memory images: the node's local checkpoint file, a sparse copy of a process's raw memory.

Layout (integers little-endian)::

    header   magic b"AOIMAGE1", version u32, chunk size u32 (65536, one wasm page),
             raw memory size u64, clock counter u64, run count u64,
             then per run: first page u64, page count u64;
             zero bytes up to a multiple of 4096, so the data is page-aligned
    data     the pages of every run, back to back
    trailer  BLAKE3 (32 bytes) of header and data

A run is a maximal stretch of pages that are not all zero; pages outside every run are zero.
The BLAKE3 trailer is checked on every load. Neither writing nor loading hashes the memory with
SHA-256 (AO's checkpoint hash, 70 ms per 100 MB here): :meth:`MemoryImage.memory_sha256` computes
it when someone asks. Parsing is strict: any field, padding byte or size that a writer would not
have produced refuses the file.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import struct
import weakref
from dataclasses import dataclass
from pathlib import Path

import blake3

from appliance.errors import EvaluationError
from attestation.atomic import atomic_file

MAGIC = b"AOIMAGE1"
VERSION = 1
CHUNK = 65536
ALIGN = 4096
DIGEST_BYTES = 32
MAX_HEADER_BYTES = 16 * 1024**2
_FIXED = struct.Struct("<8sIIQQQ")
_RUN = struct.Struct("<QQ")
_ZERO = bytes(CHUNK)
_READ_PAGES = 256  # memory_sha256 reads the data 16 MiB at a time


@dataclass(frozen=True)
class ImageInfo:
    """What a written image holds: raw memory size, clock and file size."""

    raw_size: int
    clock: int
    file_bytes: int


def write_image(memory: bytes | bytearray | memoryview, clock: int, path: Path) -> ImageInfo:
    """Write ``memory`` and ``clock`` to ``path`` atomically (``attestation.atomic``)."""
    view = memoryview(memory).cast("B")
    if len(view) % CHUNK:
        raise ValueError(f"memory of {len(view)} bytes is not a whole number of wasm pages")
    runs = nonzero_runs(view)
    header = _header(len(view), clock, runs)
    hasher = blake3.blake3(header, max_threads=blake3.blake3.AUTO)
    with atomic_file(path) as out:
        out.write(header)
        for start, pages in runs:
            data = view[start * CHUNK:(start + pages) * CHUNK]
            hasher.update(data)
            out.write(data)
        out.write(hasher.digest())
        size = out.tell()
    return ImageInfo(len(view), clock, size)


def nonzero_runs(view: memoryview) -> list[tuple[int, int]]:
    """(first page, page count) of each maximal stretch of pages that are not all zero."""
    runs: list[tuple[int, int]] = []
    start = -1
    pages = len(view) // CHUNK
    for page in range(pages):
        if _ZERO.startswith(view[page * CHUNK:(page + 1) * CHUNK]):
            if start >= 0:
                runs.append((start, page - start))
                start = -1
        elif start < 0:
            start = page
    if start >= 0:
        runs.append((start, pages - start))
    return runs


def _header(raw_size: int, clock: int, runs: list[tuple[int, int]]) -> bytes:
    parts = [_FIXED.pack(MAGIC, VERSION, CHUNK, raw_size, clock, len(runs))]
    parts += [_RUN.pack(start, pages) for start, pages in runs]
    header = b"".join(parts)
    return header + bytes(-len(header) % ALIGN)


class MemoryImage:
    """An image file open for restoring: header parsed and checked, data not read yet.

    The open descriptor keeps the file's bytes reachable even after the file is deleted, so
    an instance restored from it can reload that state again (see :meth:`load`).
    """

    def __init__(self, path: Path, memory_limit: int) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._error(f"is unreadable: {exc.strerror}") from None
        self._closer = weakref.finalize(self, os.close, self._fd)
        try:
            self._parse(memory_limit)
        except BaseException:
            self.close()
            raise

    def _error(self, what: str) -> EvaluationError:
        return EvaluationError(f"checkpoint {self.path} {what}")

    def _parse(self, memory_limit: int) -> None:
        file_bytes = os.fstat(self._fd).st_size
        fixed = self._pread(_FIXED.size, 0)
        if len(fixed) < _FIXED.size or not fixed.startswith(MAGIC):
            raise self._error("is not a memory image (bad magic or too short)")
        _, version, chunk, raw_size, clock, count = _FIXED.unpack(fixed)
        if version != VERSION:
            raise self._error(f"has image version {version}; this node reads {VERSION}")
        if chunk != CHUNK:
            raise self._error(f"has chunk size {chunk}; images use {CHUNK}")
        if raw_size % CHUNK:
            raise self._error(f"records a memory size of {raw_size}, not whole wasm pages")
        if raw_size > memory_limit:
            raise self._error(f"records {raw_size} bytes of memory, above the limit of "
                              f"{memory_limit}")
        raw_pages = raw_size // CHUNK
        header_bytes = _FIXED.size + count * _RUN.size
        if count > (raw_pages + 1) // 2 or header_bytes > MAX_HEADER_BYTES:
            raise self._error(f"lists {count} runs, more than {raw_pages} pages can hold")
        header_bytes += -header_bytes % ALIGN
        if file_bytes < header_bytes + DIGEST_BYTES:
            raise self._error(f"is truncated: {file_bytes} bytes, the header alone needs "
                              f"{header_bytes + DIGEST_BYTES}")
        header = self._pread(header_bytes, 0)
        if len(header) != header_bytes:
            raise self._error("changed size while being read")
        runs: list[tuple[int, int]] = []
        end = -1
        table_end = _FIXED.size + count * _RUN.size
        for start, pages in _RUN.iter_unpack(header[_FIXED.size:table_end]):
            if pages < 1 or start <= end or start + pages > raw_pages:
                raise self._error(f"has a bad run (page {start}, {pages} pages): runs must be "
                                  f"non-empty, sorted, separated and within the memory")
            runs.append((start, pages))
            end = start + pages
        if any(header[table_end:]):
            raise self._error("has non-zero header padding")
        data_bytes = sum(pages for _, pages in runs) * CHUNK
        expected = header_bytes + data_bytes + DIGEST_BYTES
        if file_bytes != expected:
            raise self._error(f"has {file_bytes} bytes; its header describes {expected}")
        trailer = self._pread(DIGEST_BYTES, header_bytes + data_bytes)
        if len(trailer) != DIGEST_BYTES:
            raise self._error("changed size while being read")
        self.raw_size: int = raw_size
        self.clock: int = clock
        self.runs: tuple[tuple[int, int], ...] = tuple(runs)
        self.file_bytes = file_bytes
        self._header = header
        self._trailer = trailer

    def _pread(self, length: int, offset: int) -> bytes:
        parts: list[bytes] = []
        while length > 0:
            part = os.pread(self._fd, length, offset)
            if not part:
                break
            parts.append(part)
            length -= len(part)
            offset += len(part)
        return b"".join(parts)

    def load(self, address: int, size: int, zero_below: int) -> None:
        """Fill the ``size`` bytes of memory at ``address`` with the image, then check it.

        Runs are read straight to their place; pages outside every run and below
        ``zero_below`` are cleared where not already zero (memory above it must already be
        zero). Raises :class:`EvaluationError` when the BLAKE3 trailer does not match, in which
        case the memory holds garbage and must not be used.
        """
        if size != self.raw_size:
            raise ValueError(f"image of {self.raw_size} bytes loaded into {size} bytes")
        view = memoryview((ctypes.c_ubyte * size).from_address(address)).cast("B")
        hasher = blake3.blake3(self._header, max_threads=blake3.blake3.AUTO)
        offset = len(self._header)
        for start, pages in self.runs:
            target = view[start * CHUNK:(start + pages) * CHUNK]
            self._read_into(target, offset)
            hasher.update(target)
            offset += len(target)
        if not hmac.compare_digest(hasher.digest(), self._trailer):
            raise self._error("is corrupt: its BLAKE3 digest does not match its bytes")
        gap = 0
        for start, pages in (*self.runs, (size // CHUNK, 0)):
            for page in range(gap, min(start, -(-zero_below // CHUNK))):
                if not _ZERO.startswith(view[page * CHUNK:(page + 1) * CHUNK]):
                    ctypes.memset(address + page * CHUNK, 0, CHUNK)
            gap = start + pages

    def _read_into(self, target: memoryview, offset: int) -> None:
        done = 0
        while done < len(target):
            count = os.preadv(self._fd, [target[done:]], offset + done)
            if count == 0:
                raise self._error("was truncated while being read")
            done += count

    def memory_sha256(self) -> str:
        """Hex SHA-256 of the whole raw memory (AO's checkpoint hash), checked against the
        trailer; zero pages are hashed without being read."""
        sha = hashlib.sha256()
        blake = blake3.blake3(self._header, max_threads=blake3.blake3.AUTO)
        offset = len(self._header)
        page = 0
        buffer = memoryview(bytearray(_READ_PAGES * CHUNK))
        for start, pages in self.runs:
            for _ in range(start - page):
                sha.update(_ZERO)
            for first in range(0, pages, _READ_PAGES):
                data = buffer[:min(_READ_PAGES, pages - first) * CHUNK]
                self._read_into(data, offset)
                blake.update(data)
                sha.update(data)
                offset += len(data)
            page = start + pages
        if not hmac.compare_digest(blake.digest(), self._trailer):
            raise self._error("is corrupt: its BLAKE3 digest does not match its bytes")
        for _ in range(self.raw_size // CHUNK - page):
            sha.update(_ZERO)
        return sha.hexdigest()

    def read(self) -> bytes:
        """The whole raw memory, checked against the trailer."""
        buffer = bytearray(self.raw_size)
        address = ctypes.addressof((ctypes.c_ubyte * len(buffer)).from_buffer(buffer))
        self.load(address, len(buffer), 0)
        return bytes(buffer)

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._closer()
