"""The data dir is private whatever the umask: a real ``serve`` started under umask 022 leaves
the dir and its subdirectories 0700 and every file 0600 (database, WAL, key, checkpoints,
module files), and narrows what an earlier, wider start left behind."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.node.identity import KEY_FILE
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import SERVE, start_server


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
            out[str(path.relative_to(root))] = stat.S_IMODE(info.st_mode)
    return out


def test_serve_under_umask_022_keeps_the_data_dir_private(tmp_path: Path, umask_022: None
                                                          ) -> None:
    data = tmp_path / "node"
    data.mkdir(mode=0o755)
    (data / "left-by-an-old-start").write_bytes(b"x")
    os.chmod(data / "left-by-an-old-start", 0o644)
    config = tmp_path / "config.yaml"
    config.write_text("node:\n  checkpoint_every_messages: 2\n")
    server = start_server(data, (*SERVE[:-1], "--config", str(config), SERVE[-1]))
    try:
        client = client_identity(tmp_path / "client")
        process = spawn(server, client, upload_module(server, client), "private")
        sent = [message(client, process, f"x = {n}", n) for n in range(5)]
        for item in sent:
            assert server.post("/", item.raw)[0] == 202
        server.get(f"/result/{sent[-1].id}?process-id={process}")
        deadline = time.monotonic() + 60  # a hang guard: the checkpoint follows the results
        while not list((data / "checkpoints").rglob("*.ckpt")):
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.05)
        modes = _modes(data)
    finally:
        server.stop()
    names = set(modes)
    assert {"node.sqlite3", "node.sqlite3-wal", "node.sqlite3-shm", KEY_FILE,
            "checkpoints", "modules"} <= names, names
    assert any(n.startswith("checkpoints/") for n in names), names
    assert any(n.startswith("modules/") for n in names), names
    wide = {name: oct(mode) for name, mode in modes.items()
            if mode != (0o700 if (data / name).is_dir() else 0o600)}
    assert wide == {}
