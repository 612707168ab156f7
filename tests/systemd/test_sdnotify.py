"""The notify protocol as systemd speaks it: a real datagram socket as $NOTIFY_SOCKET, a real
``serve`` process; READY=1 only once the HTTP listener answers, WATCHDOG=1 keepalives from the
event loop at half of $WATCHDOG_USEC, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from appliance.sdnotify import sd_notify, watchdog_interval
from tests.support.paths import REPO


def _socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    return sock, path


def test_serve_notifies_ready_after_listening_then_keeps_the_watchdog_fed(
        tmp_path: Path) -> None:
    sock, path = _socket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--http", "127.0.0.1:0", "--tee",
         "emulated", "--data-dir", str(tmp_path / "data")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\n"), ready
        url = ready.split("serving AO HTTP on ", 1)[1].strip()
        with urllib.request.urlopen(f"http://{url}/", timeout=30) as resp:
            assert resp.status == 200
        started = time.monotonic()
        beats = [sock.recv(4096).decode() for _ in range(3)]
        assert beats == ["WATCHDOG=1"] * 3
        assert time.monotonic() - started < 5
        proc.terminate()
        assert sock.recv(4096).decode() == "STOPPING=1"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_without_systemd_nothing_is_sent() -> None:
    env = os.environ.copy()
    env.pop("NOTIFY_SOCKET", None)
    code = ("from appliance.sdnotify import sd_notify, watchdog_interval;"
            "print(sd_notify('READY=1'), watchdog_interval())")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["False", "None"]


def test_watchdog_meant_for_another_pid_is_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = _socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    try:
        assert watchdog_interval() is None
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert watchdog_interval() == 0.5
        assert sd_notify("STATUS=test")
        assert sock.recv(100) == b"STATUS=test"
    finally:
        sock.close()
