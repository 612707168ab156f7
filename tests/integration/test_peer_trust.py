"""Attested peers with real ``serve`` processes on loopback: a push (an item with
``From-Process`` signed by a peer's node key) is scheduled only when the receiver trusts that
peer's attestation; otherwise 403 (gRPC PERMISSION_DENIED), counted and shown in ``ctl status``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from tests.integration.clients import client_identity, spawn, upload_module
from tests.integration.peering import command, free_port, poll
from tests.integration.server import Server, start_server
from tests.support.paths import REPO

OTHER_MEASUREMENT = "ab" * 48








def _trust(srv: Server, address: str) -> Any:
    with urllib.request.urlopen(srv.url + "/", timeout=60) as answer:
        peers = json.loads(answer.read())["peers"]
    return next((p["trust"] for p in peers if p["address"] == address and p["trust"]), None)


def _verdict(srv: Server, address: str, trust: str) -> Callable[[], Any]:
    def check() -> Any:
        held = _trust(srv, address)
        return held if held is not None and held["trust"] == trust else None
    return check


def _push(sender: NodeIdentity, process: str, n: int) -> items.Item:
    """What a node sends on behalf of one of its processes: signed by its node key."""
    return items.sign(sender, target=process, data=b"return 1",
                      anchor=f"{n:032d}".encode(), tags=[
                          ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"),
                          ("Action", "Eval"), ("From-Process", "f" * 43)])


def _ctl(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "ctl", "--address",
                           f"127.0.0.1:{port}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_pushes_are_scheduled_only_from_attested_peers(tmp_path: Path,
                                                       servers: list[Server]) -> None:
    port_b = free_port()
    url_b = f"http://127.0.0.1:{port_b}"
    b = start_server(tmp_path / "b", command(port_b))  # the pushing node
    servers.append(b)
    b_key = NodeIdentity.load_or_create(tmp_path / "b")
    assert b_key.address == b.address

    port_a, port_c, port_d = free_port(), free_port(), free_port()
    grpc_c = free_port()
    a = start_server(tmp_path / "a", command(port_a, url_b, flags=("--allow-emulated-peers",)))
    servers.append(a)
    c = start_server(tmp_path / "c", command(port_c, url_b, flags=(
        "--metrics", "127.0.0.1:0", "--grpc", f"127.0.0.1:{grpc_c}")))
    servers.append(c)
    policy = tmp_path / "peers.yaml"
    policy.write_text(f"allowed_measurements: [{OTHER_MEASUREMENT}]\n")
    config = tmp_path / "d.yaml"
    config.write_text(f"network:\n  peer_policy: {policy}\n")
    d = start_server(tmp_path / "d", command(port_d, url_b, flags=(
        "--allow-emulated-peers", "--config", str(config))))
    servers.append(d)

    # a: trusts b (emulated, with the flag): b's push is scheduled
    trusted = poll("a to trust b", _verdict(a, b.address, "trusted"))
    assert trusted["reason"] == "trusted" and "emulated" in trusted["detail"]
    client = client_identity(tmp_path / "client")
    process = spawn(a, client, upload_module(a, client), "pushed-to")
    status, body = a.post("/", _push(b_key, process, 1).raw)
    assert status == 202 and body["slot"] == 1, body
    status, body = a.post("/", _push(client, process, 2).raw)  # a wallet is no peer
    assert status == 403 and "not a peer of this node" in body["error"], body

    # c: no flag, no policy: b's emulated attestation is refused, so is its push
    refused = poll("c to refuse b", _verdict(c, b.address, "refused"))
    assert refused["reason"] == "no_policy", refused
    status, body = c.post("/", _push(b_key, "q" * 43, 1).raw)
    assert status == 403 and f"peer {b.address} is not trusted" in body["error"], body
    assert c.metrics_url is not None
    with urllib.request.urlopen(c.metrics_url, timeout=60) as answer:
        exposition = answer.read().decode()
    assert 'ao_appliance_peer_refusals_total{reason="no_policy"} 1.0' in exposition
    raw = tmp_path / "push.bin"
    raw.write_bytes(_push(b_key, "q" * 43, 2).raw)
    sent = _ctl(grpc_c, "send", str(raw))
    assert sent.returncode != 0 and "PERMISSION_DENIED" in sent.stderr, sent
    done = _ctl(grpc_c, "status")
    assert done.returncode == 0, done.stderr
    status_c = json.loads(done.stdout)
    [peer] = status_c["peers"]
    assert (peer["trust"], peer["trust_reason"], peer["refusals"]) == ("refused", "no_policy", 2)
    assert peer["last_refusal_ms"] > 0 and status_c["trusts_no_peer"] is True
    assert status_c["last_peer_refusal"].startswith(f"{b.address}: no_policy")

    # d: the flag, but a policy demanding another measurement: refused as failing the policy
    failed = poll("d to refuse b", _verdict(d, b.address, "refused"))
    assert failed["reason"] == "policy" and "measurement" in failed["detail"], failed
    status, body = d.post("/", _push(b_key, "q" * 43, 1).raw)
    assert status == 403 and "measurement" in body["error"], body
