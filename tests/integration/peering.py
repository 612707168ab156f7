"""Helpers for tests with several peered ``serve`` processes on loopback."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.server import Server, start_server

DEADLINE_SECONDS = 240.0


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(port: int, *peers: str, flags: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``serve`` on ``port`` with its public URL, ``--peer`` for each of ``peers`` and ``flags``
    (the data dir comes last, from :func:`~tests.integration.server.start_server`)."""
    peering = [flag for peer in peers for flag in ("--peer", peer)]
    return ("-m", "appliance.cli", "serve", "--http", f"127.0.0.1:{port}", "--tee", "emulated",
            "--public-url", f"http://127.0.0.1:{port}", *peering, *flags, "--data-dir")


def health(url: str) -> Any:
    """The node's ``GET /`` JSON."""
    with urllib.request.urlopen(url + "/", timeout=60) as answer:
        return json.loads(answer.read())


def poll(what: str, check: Callable[[], Any], seconds: float = DEADLINE_SECONDS) -> Any:
    """``check()``'s first truthy value, asked every 0.2 s for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def peer_known(srv: Server, url: str, address: str) -> Callable[[], Any]:
    """A check: ``srv`` knows the peer at ``url`` as ``address``, reachable."""
    def check() -> Any:
        return [p for p in health(srv.url)["peers"] if p["url"] == url
                and p["address"] == address and p["location"] == url and p["reachable"]]
    return check


def start_pair(tmp_path: Path, servers: list[Server], flags: tuple[str, ...] = ()
               ) -> tuple[Server, Server]:
    """Two ``serve`` processes (data dirs ``a`` and ``b`` under ``tmp_path``) peered with each
    other, started with ``flags``, once each has learned the other."""
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    a = start_server(tmp_path / "a", command(port_a, url_b, flags=flags))
    servers.append(a)
    b = start_server(tmp_path / "b", command(port_b, url_a, flags=flags))
    servers.append(b)
    poll("a to learn b", peer_known(a, url_b, b.address))
    poll("b to learn a", peer_known(b, url_a, a.address))
    return a, b
