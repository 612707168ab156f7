"""The one durable file writer: the target holds the old bytes or the new ones, never a part."""

from __future__ import annotations

from pathlib import Path

import pytest

from attestation.atomic import atomic_file, write_atomically


def test_a_writer_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    write_atomically(target, b"old")

    def crash_midway() -> None:
        with atomic_file(target) as out:
            out.write(b"new, half")
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        crash_midway()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_streaming_and_whole_writes_agree_and_keep_modes(tmp_path: Path) -> None:
    whole, streamed = tmp_path / "whole", tmp_path / "streamed"
    write_atomically(whole, b"abcdef")
    with atomic_file(streamed) as out:
        for chunk in (b"ab", b"cd", b"ef"):
            out.write(chunk)
    assert whole.read_bytes() == streamed.read_bytes() == b"abcdef"
    assert whole.stat().st_mode & 0o777 == 0o600, "a new file is private"
    whole.chmod(0o640)
    write_atomically(whole, b"again")
    assert whole.stat().st_mode & 0o777 == 0o640, "a replaced file keeps its mode"
    write_atomically(tmp_path / "key", b"k", mode=0o600)
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
