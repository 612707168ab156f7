"""Two real ``serve`` processes on loopback peered with ``--peer`` / ``--public-url``: each learns
the other's address and URL from the other, a peer down at start is learned once it comes up,
and an item for a process no peer hosts gets the node's own refusal (a node that is not a peer:
421 naming the node that schedules it). Forwarding to peers: ``test_any_node_mu.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.ao import items
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.peering import command, free_port, health, peer_known, poll
from tests.integration.server import Server, start_server


def test_two_nodes_learn_each_other_and_refusals_name_the_right_node(
        tmp_path: Path, servers: list[Server]) -> None:
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    a = start_server(tmp_path / "a", command(port_a, url_b))
    servers.append(a)
    b = start_server(tmp_path / "b", command(port_b, url_a))
    servers.append(b)
    assert (a.url, b.url) == (url_a, url_b)
    [seen_by_a] = poll("a to learn b", peer_known(a, url_b, b.address))
    poll("b to learn a", peer_known(b, url_a, a.address))
    assert seen_by_a["ttl_ms"] == 7 * 24 * 3600 * 1000 and seen_by_a["error"] is None
    assert isinstance(seen_by_a["last_seen"], int)

    client = client_identity(tmp_path / "client")
    module = upload_module(b, client)
    stranger = client_identity(tmp_path / "stranger")  # a scheduler no node here knows
    unknown = items.sign(client, data=b"1984", anchor=b"u" * 32, tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
        ("Module", module), ("Scheduler", stranger.address)])
    status, body = a.post("/", unknown.raw)
    assert status == 421, body
    assert f"scheduled by node {stranger.address}, which is not a known peer" in body["error"]
    status, body = a.post("/", message(client, "q" * 43, "return 1", 2).raw)
    assert status == 404, body  # a process no peer hosts: the node's own answer
    process = spawn(b, client, module, "on-b")
    status, body = b.post("/", message(client, process, "return 1", 3).raw)
    assert status == 202, body  # the right node schedules it


def test_a_peer_down_at_start_is_learned_once_it_comes_up(
        tmp_path: Path, servers: list[Server]) -> None:
    port_a, port_b = free_port(), free_port()
    url_b = f"http://127.0.0.1:{port_b}"
    a = start_server(tmp_path / "a", command(port_a, url_b))
    servers.append(a)

    def down() -> Any:
        return [p for p in health(a.url)["peers"] if p["reachable"] is False and p["error"]]
    [state] = poll("a to find b unreachable", down)
    assert state["address"] is None and state["last_seen"] is None
    b = start_server(tmp_path / "b", command(port_b))
    servers.append(b)
    poll("a to learn b once up", peer_known(a, url_b, b.address))
    assert health(b.url)["peers"] == []
