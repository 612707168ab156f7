"""A real ``ao-appliance serve`` tells its operator what it does: one structured INFO line per
refused request (answered ones only at DEBUG), module compile, process open, node key creation,
checkpoint, failed outbox delivery and shutdown; non-HTTP bytes on the port are one line, not a
traceback. A serve that cannot listen creates nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import SERVE, Server
from tests.support.paths import REPO

UNHOSTED = "U" * 43


def _start(data_dir: Path, log: Path, *extra: str) -> Server:
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, *SERVE, str(data_dir), *extra], cwd=REPO,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"listening"' in line:
            event = json.loads(line)
            return Server(proc, f"http://{event['http']}", event["address"], data_dir)
    proc.wait()
    raise AssertionError(f"serve exited {proc.returncode}: {log.read_text()}")


def test_serve_logs_one_line_per_event(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("node:\n  checkpoint_every_messages: 2\n  workers: 1\n")
    log = tmp_path / "serve.log"
    srv = _start(tmp_path / "node", log, "--config", str(config))
    try:
        client = client_identity(tmp_path / "client")
        module = upload_module(srv, client)
        process = spawn(srv, client, module, "logged")
        sent = [message(client, process, code, n) for n, code in enumerate(
            [f"Send({{ Target = '{UNHOSTED}', Action = 'Ping' }})", "return 1", "return 2"])]
        for item in sent:
            assert srv.post("/", item.raw)[0] == 202
            srv.get_json(f"/result/{item.id}?process-id={process}")
        assert srv.post("/", b"")[0] == 400
        with pytest.raises(urllib.error.HTTPError, match="404"):
            srv.get(f"/processes/{UNHOSTED}")
        port = int(srv.url.rsplit(":", 1)[1])
        for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",  # TLS
                     b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(junk)
                sock.settimeout(30)
                sock.recv(1024)
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0
    text = log.read_text()
    lines = text.splitlines()

    def one(pattern: str) -> str:
        found = [line for line in lines if re.search(pattern, line)]
        assert found, f"no log line matches {pattern!r} in:\n{text}"
        assert " INFO " in found[0] or " WARNING " in found[0], found[0]
        return found[0]

    one(rf"INFO appliance.identity: node key created address={srv.address} ")
    one(r"INFO appliance.http: request method=POST route=/ status=400 ms=\d+\.\d")
    one(r"INFO appliance.http: request method=GET route=/processes/\{id\} status=404 ms=")
    assert not [line for line in lines if "status=202" in line or "status=200" in line]
    one(rf"INFO appliance.node: module compiled module={module} format=\S+ ms=\d")
    one(rf"INFO appliance.node: process opened process={process} module={module} load_ms=")
    one(rf"INFO appliance.node: checkpoint process={process} slot=\d+ memory_bytes=\d+ ")
    one(rf"WARNING appliance.messenger: outbox delivery failed process={process} slot=1 "
        rf".*target={UNHOSTED} status=pending-remote reason=")
    one(r"INFO aiohttp.server: bad http peer=127.0.0.1 error=")
    one(r"INFO appliance.serve: shutdown signal=SIGTERM")
    one(r"INFO appliance.serve: shutdown complete ")
    assert "Traceback" not in text


def test_serve_that_cannot_listen_creates_no_data_dir_and_no_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "never"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "serve", "--http", f"127.0.0.1:{port}",
             "--tee", "emulated", "--data-dir", str(data_dir)],
            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen for the AO HTTP API on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not data_dir.exists()
    assert time.monotonic() - started < 120  # hang guard only
