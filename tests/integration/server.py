"""A real ``ao-appliance serve`` process on loopback, for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.paths import REPO


@dataclass
class Server:
    """A running node: its process, URL and address."""

    proc: subprocess.Popen[str]
    url: str
    address: str
    data_dir: Path
    metrics_url: str | None = None

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as resp:
            return bytes(resp.read())

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def post(self, path: str, body: bytes, content_type: str = "application/octet-stream"
             ) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=body, method="POST",
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def shard_pids(self) -> list[int]:
        """Pids of the node's shard processes (none for a one-shard node)."""
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        shards = []
        for pid in pids:
            with contextlib.suppress(OSError):
                if b"appliance.node.shard_host" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    shards.append(pid)
        return sorted(shards)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


SERVE = ("-m", "appliance.cli", "serve", "--http", "127.0.0.1:0", "--tee", "emulated",
         "--data-dir")


def start_server(data_dir: Path, command: tuple[str, ...] = SERVE) -> Server:
    """Start a node on a free loopback port and wait until it listens."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, *command, str(data_dir)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{") and '"listening"' in line:
            event = json.loads(line)
            metrics = f"http://{event['metrics']}/metrics" if "metrics" in event else None
            return Server(proc, f"http://{event['http']}", event["address"], data_dir, metrics)
    proc.wait()
    raise RuntimeError(f"node exited with {proc.returncode} before listening")
