"""Two real ``serve`` processes on loopback peered with ``--peer`` / ``--public-url``: each learns
the other's address and URL from the other, a peer down at start is learned once it comes up,
and an item posted to the wrong node is refused (421) naming the node that schedules it."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.clients import client_identity, message, process_item, spawn, upload_module
from tests.integration.server import Server, start_server

DEADLINE_SECONDS = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(port: int, *peers: str) -> tuple[str, ...]:
    flags = [flag for peer in peers for flag in ("--peer", peer)]
    return ("-m", "appliance.cli", "serve", "--http", f"127.0.0.1:{port}", "--tee", "emulated",
            "--public-url", f"http://127.0.0.1:{port}", *flags, "--data-dir")


def _health(url: str) -> Any:
    with urllib.request.urlopen(url + "/", timeout=60) as answer:
        return json.loads(answer.read())


def _poll(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def _peer_known(srv: Server, url: str, address: str) -> Callable[[], Any]:
    def check() -> Any:
        return [p for p in _health(srv.url)["peers"] if p["url"] == url
                and p["address"] == address and p["location"] == url and p["reachable"]]
    return check


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    running: list[Server] = []
    yield running
    for srv in running:
        srv.stop()


def test_two_nodes_learn_each_other_and_refusals_name_the_right_node(
        tmp_path: Path, servers: list[Server]) -> None:
    port_a, port_b = _free_port(), _free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    a = start_server(tmp_path / "a", _command(port_a, url_b))
    servers.append(a)
    b = start_server(tmp_path / "b", _command(port_b, url_a))
    servers.append(b)
    assert (a.url, b.url) == (url_a, url_b)
    [seen_by_a] = _poll("a to learn b", _peer_known(a, url_b, b.address))
    _poll("b to learn a", _peer_known(b, url_a, a.address))
    assert seen_by_a["ttl_ms"] == 7 * 24 * 3600 * 1000 and seen_by_a["error"] is None
    assert isinstance(seen_by_a["last_seen"], int)

    client = client_identity(tmp_path / "client")
    module = upload_module(b, client)
    process = spawn(b, client, module, "on-b")
    status, body = a.post("/", message(client, process, "return 1", 1).raw)
    assert status == 421, body
    assert body["error"] == (f"process {process} is scheduled by node {b.address} at {url_b}; "
                             "send it there")
    wrong = process_item(b, client, module, "also-b")  # Scheduler: b, posted to a
    status, body = a.post("/", wrong.raw)
    assert status == 421, body
    assert f"process {wrong.id} is scheduled by node {b.address} at {url_b}" in body["error"]
    status, body = a.post("/", message(client, "q" * 43, "return 1", 2).raw)
    assert status == 404, body  # a process no peer hosts: the node's own answer
    status, body = b.post("/", message(client, process, "return 1", 3).raw)
    assert status == 202, body  # the right node schedules it


def test_a_peer_down_at_start_is_learned_once_it_comes_up(
        tmp_path: Path, servers: list[Server]) -> None:
    port_a, port_b = _free_port(), _free_port()
    url_b = f"http://127.0.0.1:{port_b}"
    a = start_server(tmp_path / "a", _command(port_a, url_b))
    servers.append(a)

    def down() -> Any:
        return [p for p in _health(a.url)["peers"] if p["reachable"] is False and p["error"]]
    [state] = _poll("a to find b unreachable", down)
    assert state["address"] is None and state["last_seen"] is None
    b = start_server(tmp_path / "b", _command(port_b))
    servers.append(b)
    _poll("a to learn b once up", _peer_known(a, url_b, b.address))
    assert _health(b.url)["peers"] == []
