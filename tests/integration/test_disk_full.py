"""Disk full (a real ``serve`` with its data dir on a small tmpfs): a write answers 507 with a
JSON error and counts as its own reason, reads go on, and once space is back the node accepts
and evaluates again by itself, the message in flight when the disk filled included."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import SERVE, Server, start_server


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system refuses (ENOSPC)."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 4096)


def _metrics(server: Server) -> str:
    assert server.metrics_url is not None
    with urllib.request.urlopen(server.metrics_url, timeout=30) as resp:
        return str(resp.read().decode())


def _metric(server: Server, name: str) -> float:
    lines = [line for line in _metrics(server).splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[1]) if lines else 0.0


def test_disk_full_is_507_reads_go_on_and_writes_resume(small_disk: Path) -> None:
    data = small_disk / "node"
    server = start_server(data, (*SERVE[:-1], "--metrics", "127.0.0.1:0", SERVE[-1]))
    try:
        client = client_identity(small_disk.parent / "client")
        process = spawn(server, client, upload_module(server, client), "cramped")
        first = message(client, process, "return 'before'", 0)
        assert server.post("/", first.raw)[0] == 202
        server.get(f"/result/{first.id}?process-id={process}")
        reserve, filler = small_disk / "reserve", small_disk / "filler"
        reserve.write_bytes(b"\0" * (1 << 20))
        _fill(filler)
        reserve.unlink()  # 1 MiB left: room for a message, not for its 3 MB result
        slow = message(client, process, "return 'in flight' .. ('y'):rep(3e6)", 1)
        assert server.post("/", slow.raw)[0] == 202
        deadline = time.monotonic() + 120  # a hang guard: wait until its commit found no space
        while _metric(server, "ao_appliance_commits_deferred_total") < 1:
            assert time.monotonic() < deadline, "the result of `slow` never hit the full disk"
            time.sleep(0.1)

        # SQLite first fills the free pages its files already hold: post until a write needs more
        padding = "x" * 100_000
        acked = []
        for n in range(2, 1000):
            item = message(client, process, f"return [[{n} {padding}]]", n)
            status, body = server.post("/", item.raw)
            if status != 202:
                break
            acked.append(item)
        assert status == 507, body
        assert "disk is full" in body["error"]
        assert json.loads(server.get(f"/result/{first.id}?process-id={process}"))["Output"]
        assert server.get_json(f"/{process}?limit=10")["edges"]
        assert 'reason="StorageFull"' in _metrics(server)

        os.unlink(filler)
        later = message(client, process, "return 'after'", 1000)
        assert server.post("/", later.raw)[0] == 202
        for sent, want in ((slow, "in flight"), (later, "after")):
            result = json.loads(server.get(f"/result/{sent.id}?process-id={process}"))
            assert not result.get("Error"), result
            assert want in json.dumps(result["Output"]), result
        for item in acked:
            assert not json.loads(server.get(f"/result/{item.id}?process-id={process}")
                                  ).get("Error")
    finally:
        server.stop()
