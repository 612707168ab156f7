"""Any node is a messenger (issue 14 step 2): the forwarder's pure decisions, its durable queue,
module checks against a real peer node, and gRPC Spawn going through the same forwarding."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from appliance.ao import items
from appliance.errors import BadPeerAnswer, NotHosted, Overloaded, PeerUnavailable
from appliance.metrics import NodeMetrics
from appliance.network.forward import (
    GIVE_UP_MS,
    RETRY_MAX_MS,
    SETTLED_KEEP_MS,
    Forwarder,
    check_module,
    outcome_of,
    parse_receipt,
    retry_delay_ms,
)
from appliance.network.peers import HttpTransport, PeerDirectory
from appliance.node.db.forwards import (
    DELIVERED,
    FAILED,
    FORWARDS_FILE,
    PENDING,
    SCHEMA_VERSION,
    ForwardQueue,
)
from appliance.node.db.schema import connect
from appliance.node.identity import NodeIdentity
from appliance.rpc.servicer import OperatorService
from appliance.rpc.status import grpc_code
from attestation.providers import EmulatedProvider
from tests.integration.clients import module_item
from tests.integration.inproc import serve_in_thread
from tests.integration.peering import free_port
from tests.network.test_peers import Canned, _answer, _node, _peer
from tests.rpc.support import make_node


def test_outcomes_follow_the_agreed_push_contract() -> None:
    assert [outcome_of(s) for s in (200, 202, 299)] == ["delivered"] * 3
    assert [outcome_of(s) for s in (400, 403, 404, 413, 422)] == ["final"] * 5
    assert [outcome_of(s) for s in (None, 408, 421, 429, 500, 503, 507, 302)] == ["retry"] * 8


def test_retry_delay_doubles_then_caps() -> None:
    assert [retry_delay_ms(n) for n in (1, 2, 3, 4)] == [500, 1000, 2000, 4000]
    assert retry_delay_ms(40) == RETRY_MAX_MS and retry_delay_ms(0) == 500


def test_only_the_items_own_receipt_is_believed() -> None:
    ok = parse_receipt(b'{"id": "i", "timestamp": 5, "slot": 3}', "i", "http://b")
    assert ok["slot"] == 3
    for bad in (b"", b"[]", b'{"id": "j", "timestamp": 5}', b'{"id": "i"}',
                b'{"id": "i", "timestamp": 5, "slot": "3"}'):
        with pytest.raises(BadPeerAnswer, match="http://b acknowledged item i"):
            parse_receipt(bad, "i", "http://b")


def test_the_queue_is_durable_and_idempotent(tmp_path: Path) -> None:
    queue = ForwardQueue(tmp_path)
    caps = {"max_pending": 2, "max_pending_bytes": 10}
    row = queue.add("i" * 43, "http://b:1", b"raw", 1000, **caps)
    assert (row.status, row.attempts, row.next_ms) == (PENDING, 0, 1000)
    assert queue.add("i" * 43, "http://other:2", b"other", 2000, **caps) == row  # same row
    with pytest.raises(Overloaded, match="already wait for peers"):
        queue.add("k" * 43, "http://b:1", b"12345678", 1000, **caps)  # 3 + 8 bytes > 10
    queue.retry_at(row.item_id, "HTTP 503: busy", 5000)
    assert queue.due(4999, 10) == [] and [r.error for r in queue.due(5000, 10)] == \
        ["HTTP 503: busy"]
    queue.add("j" * 43, "http://b:1", b"raw2", 1000, **caps)
    with pytest.raises(Overloaded):
        queue.add("k" * 43, "http://b:1", b"", 1000, **caps)  # 2 pending already
    queue.failed("j" * 43, "HTTP 400: bad")
    queue.close()
    again = ForwardQueue(tmp_path)  # reopened: nothing lost
    assert again.get("i" * 43).attempts == 1 and again.get("j" * 43).status == FAILED
    again.delivered("i" * 43, '{"id": "x"}')
    assert again.by_status() == {DELIVERED: 1, FAILED: 1} and again.due(10**12, 10) == []
    assert again.get("i" * 43).raw == b"" and again.get("j" * 43).raw == b""  # bytes dropped
    again.close()
    conn = connect(tmp_path / FORWARDS_FILE)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_settled_forwards_are_pruned_and_pending_ones_kept(tmp_path: Path) -> None:
    queue = ForwardQueue(tmp_path)
    caps = {"max_pending": 10, "max_pending_bytes": 100}
    for name, queued_ms in (("a", 1000), ("b", 1000), ("c", 1000), ("d", 9000)):
        queue.add(name * 43, "http://b:1", b"raw", queued_ms, **caps)
    queue.delivered("a" * 43, '{"id": "x"}')
    queue.failed("b" * 43, "HTTP 400: bad")
    queue.delivered("d" * 43, '{"id": "y"}')
    assert queue.prune(5000, 1) == 1 and queue.prune(5000, 10) == 1  # bounded per call
    assert queue.by_status() == {PENDING: 1, DELIVERED: 1}  # c pending, d too recent
    assert queue.get("c" * 43).raw == b"raw" and queue.prune(5000, 10) == 0
    queue.close()


def test_a_forward_never_acknowledged_is_given_up_then_pruned(tmp_path: Path) -> None:
    clock = [1000]
    directory = PeerDirectory([], "a" * 43, transport=Canned())
    forwarder = Forwarder(directory, tmp_path, max_item_bytes=1 << 20, wall_ms=lambda: clock[0])
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every attempt fails at once
    try:
        forwarder.queue.add("i" * 43, dead, b"raw", clock[0], max_pending=10,
                            max_pending_bytes=100)
        assert forwarder.sweep() == 0 and forwarder.queue.get("i" * 43).status == PENDING
        clock[0] += GIVE_UP_MS
        assert forwarder.sweep() == 0
        row = forwarder.queue.get("i" * 43)
        assert row.status == FAILED and "not acknowledged within 24 h" in str(row.error)
        assert forwarder.prune() == 0  # settled, but kept a week for repeat posts
        clock[0] += SETTLED_KEEP_MS
        assert forwarder.prune() == 1 and forwarder.forwards_by_status() == {}
    finally:
        forwarder.close()


def test_a_module_from_a_peer_is_checked(tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    module = items.sign(client, data=b"\0asm-bytes", tags=[("Data-Protocol", "ao"),
                                                           ("Type", "Module")])
    fields = _node(module)
    assert check_module(fields, module.data, module.id, "http://b", 1 << 20).raw == module.raw
    with pytest.raises(BadPeerAnswer, match=f"module {module.id} from peer http://b"):
        check_module(fields, b"\0asm-BYTES", module.id, "http://b", 1 << 20)  # data swapped
    with pytest.raises(BadPeerAnswer, match=f"http://b answered item {module.id} for module"):
        check_module(fields, module.data, "q" * 43, "http://b", 1 << 20)
    message = items.sign(client, data=b"x", tags=[("Data-Protocol", "ao"), ("Type", "Message")])
    with pytest.raises(BadPeerAnswer, match="is not a Module item"):
        check_module(_node(message), b"x", message.id, "http://b", 1 << 20)
    with pytest.raises(BadPeerAnswer, match="no item fields"):
        check_module(None, b"x", message.id, "http://b", 1 << 20)


def test_a_peer_lying_about_a_module_is_refused_naming_it(tmp_path: Path) -> None:
    """The peer's /raw is real; its GraphQL fields are another item's: refused."""
    client = NodeIdentity.load_or_create(tmp_path / "client")
    with serve_in_thread(tmp_path / "b", EmulatedProvider(tmp_path / "tee-b")) as (srv, peer):
        module = module_item(client)
        peer.ingest(module.raw)
        canned = Canned()
        _peer(canned, srv.url, peer.identity)
        directory = PeerDirectory([srv.url], "a" * 43, transport=canned)
        directory.refresh(srv.url)
        (tmp_path / "a").mkdir()
        forwarder = Forwarder(directory, tmp_path / "a", max_item_bytes=1 << 26)
        try:
            canned.answers[srv.url + "/graphql"] = _answer()
            assert forwarder.module("n" * 43) is None  # no peer lists it
            canned.answers[srv.url + "/graphql"] = _answer(_node(module) | {"id": "n" * 43})
            with pytest.raises(BadPeerAnswer, match=f"peer {srv.url} answered another item"):
                forwarder.module(module.id)
            other = items.sign(client, data=b"other", tags=[("Type", "Module")])
            canned.answers[srv.url + "/graphql"] = _answer(_node(other) | {"id": module.id})
            with pytest.raises(BadPeerAnswer, match=f"from peer {srv.url}"):
                forwarder.module(module.id)
            canned.answers[srv.url + "/graphql"] = _answer(_node(module))
            assert forwarder.module(module.id) == module.raw
        finally:
            forwarder.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_grpc_spawn_is_forwarded_like_http(tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    with serve_in_thread(tmp_path / "b", EmulatedProvider(tmp_path / "tee-b")) as (srv, peer):
        module = module_item(client)
        peer.ingest(module.raw)
        node = make_node(tmp_path / "a")
        directory = PeerDirectory([srv.url], node.identity.address,
                                  transport=HttpTransport(timeout=30))
        assert directory.refresh(srv.url).reachable
        forwarder = Forwarder(directory, node.settings.data_dir,
                              max_item_bytes=node.settings.max_item_bytes, wait_seconds=30)
        node.peers = forwarder
        try:
            process = items.sign(client, data=b"1984", tags=[
                ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
                ("Module", module.id), ("Scheduler", peer.identity.address)])
            receipt = OperatorService(node, peers=directory)._ingest(process.raw, "Process",
                                                                     "Spawn")
            assert (receipt.id, receipt.slot, receipt.forwarded_to) == (process.id, 0, srv.url)
            assert peer.process_info(process.id)[0].id == process.id
            row = forwarder.queue.get(process.id)
            assert row.status == DELIVERED and json.loads(row.receipt or "")["slot"] == 0

            down = f"http://127.0.0.1:{_closed_port()}"
            forwarder.wait_seconds = 5
            moved = items.sign(client, data=b"1984", anchor=b"m" * 32, tags=[
                ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
                ("Module", module.id), ("Scheduler", peer.identity.address)])
            state = directory._states[srv.url]  # the peer's record now names a dead URL
            assert state.location is not None
            directory._states[srv.url] = replace(state, location=replace(state.location,
                                                                         url=down))
            with pytest.raises(PeerUnavailable, match="queued it and keeps retrying") as caught:
                OperatorService(node, peers=directory)._ingest(moved.raw, "Process", "Spawn")
            assert grpc_code(caught.value) == grpc.StatusCode.UNAVAILABLE
            assert forwarder.queue.get(moved.id).status == PENDING
            stranger = items.sign(client, data=b"1984", tags=[
                ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module.id),
                ("Scheduler", "z" * 43)])
            with pytest.raises(NotHosted, match="which is not a known peer"):
                OperatorService(node, peers=directory)._ingest(stranger.raw, "Process", "Spawn")
            metrics = NodeMetrics()
            metrics.attach(node)
            assert [metrics.registry.get_sample_value("ao_appliance_forwards", {"status": s})
                    for s in ("pending", "delivered", "failed")] == [1, 1, 0]
        finally:
            forwarder.close()
            node.close()
