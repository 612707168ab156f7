"""Anonymous clients cost the node bounded work (issue 12 items 4 and 5), on a real ``serve``.

No wall-clock assertions: outcomes are statuses, counts and orderings; timeouts are hang guards.
"""

from __future__ import annotations

import json
import select
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.ao import items
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import Server, start_server

GUARD = 120.0  # seconds: a hang guard, never an expectation


def _serve(tmp_path: Path, config: str) -> Server:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return start_server(tmp_path / "node", (
        "-m", "appliance.cli", "serve", "--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
        "--tee", "emulated", "--config", str(path), "--data-dir"))


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = _serve(tmp_path, request.param)
    try:
        yield srv
    finally:
        srv.stop()


def _get(srv: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(srv.url + path, timeout=GUARD) as resp:
            return resp.status, dict(resp.headers), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), bytes(exc.read())


def _gauge(srv: Server, name: str) -> float:
    assert srv.metrics_url is not None
    with urllib.request.urlopen(srv.metrics_url, timeout=GUARD) as resp:
        for family in text_string_to_metric_families(resp.read().decode()):
            if family.name == name:
                return float(family.samples[0].value)
    raise AssertionError(f"{name} is not exported")


def _dry_run(srv: Server, process: str, owner: str, code: str) -> tuple[int, Any]:
    body = json.dumps({"Owner": owner, "Tags": [{"name": "Action", "value": "Eval"}],
                       "Data": code}).encode()
    return srv.post(f"/dry-run?process-id={process}", body, "application/json")


def _aos(srv: Server, tmp_path: Path) -> tuple[Any, str]:
    client = client_identity(tmp_path / "client")
    process = spawn(srv, client, upload_module(srv, client), "abuse")
    status, _, body = _get(srv, f"/result/{process}?process-id={process}")
    assert status == 200, body
    return client, process


def _send(srv: Server, client: Any, process: str, code: str, n: int) -> str:
    item = message(client, process, code, n)
    status, body = srv.post("/", item.raw)
    assert status == 202, body
    return item.id


def _rows(srv: Server, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{srv.data_dir / 'node.sqlite3'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.parametrize("server", ["http:\n  attestation_rate: 0.001\n  attestation_burst: 3\n"],
                         indirect=True)
def test_fresh_attestations_store_nothing_and_are_rate_limited(server: Server) -> None:
    before = _rows(server, "SELECT count(*) FROM items")[0][0]
    for nonce in ("bm9uY2Ux", "bm9uY2Uy", "bm9uY2Uz"):
        status, _, raw = _get(server, f"/attestation?nonce={nonce}")
        assert status == 200
        item = items.parse_verified(raw, 1 << 20)
        assert items.first_tag(item, "Type") == "Attestation"
    assert _rows(server, "SELECT count(*) FROM items")[0][0] == before
    status, headers, body = _get(server, "/attestation?nonce=bm9uY2U0")
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert "fresh attestations are limited" in json.loads(body)["error"]
    assert _get(server, "/attestation")[0] == 200  # the standing one is not limited


@pytest.mark.parametrize("server", ["node:\n  state_checkpoint_seconds: 3600\n"], indirect=True)
def test_state_is_served_without_a_checkpoint_per_request(server: Server, tmp_path: Path) -> None:
    client, process = _aos(server, tmp_path)
    first = _send(server, client, process, "x = 41", 1)
    assert _get(server, f"/result/{first}?process-id={process}")[0] == 200
    status, headers, memory = _get(server, f"/state/{process}")
    assert status == 200 and headers["AO-Slot"] == "1"

    def files() -> dict[str, int]:
        return {str(p): p.stat().st_ino for p in (server.data_dir / "checkpoints").rglob("*")
                if p.is_file()}

    written = files()
    for _ in range(5):
        status, headers, again = _get(server, f"/state/{process}")
        assert (status, headers["AO-Slot"], again) == (200, "1", memory)
    assert files() == written
    second = _send(server, client, process, "x = 42", 2)
    assert _get(server, f"/result/{second}?process-id={process}")[0] == 200
    status, headers, _ = _get(server, f"/state/{process}")  # within state_checkpoint_seconds
    assert (status, headers["AO-Slot"]) == (200, "1")
    assert files() == written


@pytest.mark.parametrize("server", [
    "node:\n  dry_run_wall_clock_seconds: 30\n  dry_run_concurrency: 1\n"
    "  result_wait_seconds: 600\n"], indirect=True)
def test_a_long_dry_run_does_not_delay_the_process(server: Server, tmp_path: Path) -> None:
    client, process = _aos(server, tmp_path)
    warm = _send(server, client, process, "x = 1", 1)
    assert _get(server, f"/result/{warm}?process-id={process}")[0] == 200
    box: dict[str, Any] = {}

    def run_long() -> None:
        while (answer := _dry_run(server, process, client.address, "while true do end")
               )[0] == 503:
            pass  # a probe below held the one dry-run slot
        box["long"] = answer

    long = threading.Thread(target=run_long)
    long.start()
    try:
        for _ in range(2000):  # until the long dry-run holds the only dry-run slot
            status, body = _dry_run(server, process, client.address, "return 1")
            if status == 503:
                break
            assert status == 200, body
        else:
            pytest.fail("the long dry-run never held its slot")
        assert "too many dry-runs at once (limit 1)" in body["error"]
        scheduled = _send(server, client, process, "return 6 * 7", 2)
        status, _, result = _get(server, f"/result/{scheduled}?process-id={process}")
        assert status == 200
        assert "42" in json.dumps(json.loads(result)["Output"])
        assert long.is_alive(), "the scheduled message waited for the dry-run"
    finally:
        long.join(GUARD)
    status, dry = box["long"]
    assert status == 200 and "wall-clock limit exceeded" in dry["Error"], dry


@pytest.mark.parametrize("server", [
    "limits:\n  wall_clock_seconds: 20\nnode:\n  result_wait_seconds: 600\n  workers: 1\n"
    "http:\n  max_result_waiters: 16\n"], indirect=True)
def test_waiting_clients_hold_no_thread_and_are_bounded(server: Server, tmp_path: Path) -> None:
    client, process = _aos(server, tmp_path)
    _send(server, client, process, "while true do end", 1)  # blocks evaluation a while
    queued = [_send(server, client, process, f"return {n}", n) for n in range(2, 18)]
    done: list[int] = []
    waiters = [threading.Thread(target=lambda m=m: done.append(
        _get(server, f"/result/{m}?process-id={process}")[0])) for m in queued]
    for waiter in waiters:
        waiter.start()
    try:
        for _ in range(20000):  # until all 16 wait
            if _gauge(server, "ao_appliance_http_result_waiters") == 16:
                break
        else:
            pytest.fail("the waiters never filled the bound")
        status, headers, body = _get(server, f"/result/{queued[0]}?process-id={process}")
        assert status == 503
        assert "too many clients are waiting for results (limit 16)" in json.loads(body)["error"]
        assert int(headers["Retry-After"]) >= 1
        assert not done, "a waiter finished before the blocking message did"
        late = message(client, process, "return 'late'", 99)
        status, _ = server.post("/", late.raw)  # answered while 16 clients wait
        assert status == 202
        assert not done, "the POST was answered only after the waiters"
    finally:
        for waiter in waiters:
            waiter.join(GUARD)
    assert done == [200] * 16


SLOW = ("http:\n  header_timeout_seconds: 1\n  body_timeout_seconds: 1\n"
        "  idle_timeout_seconds: 600\n  max_connections: 30\n")


def _connect(srv: Server) -> socket.socket:
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=GUARD)


def _read_all(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # the answer read before the reset is what counts
    return answer


def _dribble(sock: socket.socket, head: bytes, byte: bytes) -> bytes:
    """Send ``head``, then ``byte`` now and then until the server answers or closes."""
    sock.sendall(head)
    for _ in range(int(GUARD / 0.2)):
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            return _read_all(sock)
        try:
            sock.sendall(byte)
        except OSError:
            continue
    pytest.fail("the server kept a dribbling connection open")


@pytest.mark.parametrize("server", [SLOW], indirect=True)
def test_dribbling_heads_and_bodies_are_closed(server: Server) -> None:
    socks = [_connect(server) for _ in range(20)]
    answers: list[bytes] = [b""] * len(socks)
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, _dribble(
        socks[i], b"GET /timestamp HTTP/1.1\r\nHost: x\r\n", b"X"))) for i in range(len(socks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"request head did not arrive within 1 s" in answer
    with _connect(server) as body:
        answer = _dribble(body, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
                          b"X")
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request body did not arrive within 1 s" in answer
    for sock in socks:
        sock.close()
    assert _get(server, "/timestamp")[0] == 200


def _request(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /timestamp HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return answer


@pytest.mark.parametrize("server", ["http:\n  max_connections: 4\n"], indirect=True)
def test_connections_are_capped(server: Server) -> None:
    held = [_connect(server) for _ in range(4)]
    for sock in held:
        _request(sock)  # admitted and kept alive
    with _connect(server) as refused:
        answer = _read_all(refused)
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert b"too many open connections (limit 4)" in answer
    assert b"Retry-After: 1" in answer
    held.pop().close()
    for _ in range(2000):  # the freed place is given to a new connection
        with _connect(server) as again:
            again.sendall(b"GET /timestamp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if again.recv(65536).startswith(b"HTTP/1.1 200"):
                break
    else:
        pytest.fail("a closed connection never freed its place")
    for sock in held:
        sock.close()
