"""The data dir is private to the node: the dir and every dir under it 0700, every file 0600,
whatever umask the node was started under (the systemd unit's ``UMask=0077`` is a second line)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private(data_dir: Path, *, keep: str) -> int:
    """Create ``data_dir`` (0700) and narrow what a wider umask left in it: dirs to 0700, regular
    files to 0600 (sockets and links are left alone). ``keep`` (the node key) is not narrowed: a
    key others could read is refused where it is loaded, not quietly accepted. Returns how many
    entries were narrowed."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    narrowed = 0
    for root, dirs, files in os.walk(data_dir):
        for name, want in [(root, DIR_MODE), *((os.path.join(root, d), DIR_MODE) for d in dirs),
                           *((os.path.join(root, f), FILE_MODE) for f in files)]:
            info = os.lstat(name)
            if name == os.path.join(data_dir, keep):
                continue
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                continue
            if stat.S_IMODE(info.st_mode) & ~want:
                os.chmod(name, stat.S_IMODE(info.st_mode) & want)
                narrowed += 1
    return narrowed


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (a library user's umask aside)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
