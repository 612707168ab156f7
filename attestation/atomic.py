"""The one way the node and its tools replace a file durably (keys, memory images, module and
compiled-code caches, trust caches, evidence bundles).

One rule: write a unique temporary in the target's directory (0600 unless told otherwise, or the
mode of the file it replaces), fsync it, rename it over the target, fsync the directory. Any error
removes the temporary and leaves the old target as it was: a reader sees the old file or the new
one, never part of one, and after a crash the rename is either whole or absent.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` when the block ends without an error.

    ``mode`` defaults to the mode of the file being replaced, else 0600.
    """
    if mode is None:
        with contextlib.suppress(FileNotFoundError):
            mode = path.stat().st_mode & 0o7777
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomically(path: Path, data: bytes | bytearray, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` (see :func:`atomic_file`)."""
    with atomic_file(path, mode=mode) as handle:
        handle.write(data)
