"""AO HTTP API on loopback: routes answer in AO's shapes; bad input gets 4xx and stores nothing."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from attestation.providers import EmulatedProvider
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.inproc import serve_in_thread
from tests.integration.server import SERVE, Server, start_server

Live = tuple[Server, Node, NodeIdentity, str]
SCHEDULER_QUERY = ('{ transactions(owners: ["%s"], tags: [{name: "Type", values: '
                   '["Scheduler-Location"]}]) { edges { node { tags { name value } } } } }')


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("http")
    limit = 4 * 1024 * 1024
    provider = EmulatedProvider(base / "tee")
    with serve_in_thread(base / "node", provider, max_item_bytes=limit) as (srv, node):
        client = client_identity(base / "client")
        module = upload_module(srv, client)
        process = spawn(srv, client, module, "http")
        yield srv, node, client, process


def _count(node: Node) -> tuple[int, int]:
    items_n = node.home.store.one("SELECT count(*) FROM items")
    sched_n = node.home.store.one("SELECT count(*) FROM schedule")
    assert items_n is not None and sched_n is not None
    return int(items_n[0]), int(sched_n[0])


def test_routes_answer_in_ao_shapes(live: Live) -> None:
    srv, node, client, process = live
    msg = message(client, process, "return 1 + 1", 1)
    status, body = srv.post("/", msg.raw)
    assert status == 202 and body["id"] == msg.id and body["slot"] >= 1
    assert "2" in json.dumps(srv.get_json(f"/result/{msg.id}?process-id={process}")["Output"])
    health = srv.get_json("/")
    assert health["address"] == node.identity.address
    assert srv.get_json("/timestamp")["timestamp"] > 0
    meta = srv.get_json(f"/processes/{process}")
    assert meta["process_id"] == process and meta["assignment"]["tags"]
    one = srv.get_json(f"/{msg.id}?process-id={process}")
    assert one["message"]["id"] == msg.id
    page = srv.get_json(f"/{process}?limit=1")
    assert page["page_info"]["has_next_page"] is True and len(page["edges"]) == 1
    results = srv.get_json(f"/results/{process}?sort=DESC&limit=1")
    cursor = results["edges"][0]["cursor"]
    older = srv.get_json(f"/results/{process}?sort=DESC&limit=5&from={cursor}")
    assert all(e["cursor"] != cursor for e in older["edges"])
    attestation = items.parse_verified(srv.get("/attestation?nonce=bm9uY2U"), 1 << 20)
    assert items.first_tag(attestation, "Nonce-Base64") == "bm9uY2U="
    query = SCHEDULER_QUERY.replace("%s", node.identity.address)
    gql = srv.post("/graphql", json.dumps({"query": query}).encode(), "application/json")[1]
    tags = gql["data"]["transactions"]["edges"][0]["node"]["tags"]
    assert {"name": "Url", "value": srv.url} in tags
    memory = srv.get(f"/state/{process}")
    assert len(memory) % 65536 == 0


@pytest.mark.parametrize("case", ["empty", "garbage", "forged", "unsigned-type", "no-protocol",
                                  "unknown-process", "wrong-scheduler", "oversized",
                                  "bad-limit", "unknown-result", "bad-dry-run", "bad-graphql"])
def test_bad_input_is_refused_and_stores_nothing(
        live: Live, case: str) -> None:
    srv, node, client, process = live
    before = _count(node)
    good = message(client, process, "return 1", 99)
    if case == "empty":
        status, body = srv.post("/", b"")
    elif case == "garbage":
        status, body = srv.post("/", b"\x02\x00" + b"x" * 200)
    elif case == "forged":
        raw = bytearray(good.raw)
        raw[-1] ^= 0x01
        status, body = srv.post("/", bytes(raw))
    elif case == "unsigned-type":
        status, body = srv.post("/", b"\x07\x00" + good.raw[2:])
    elif case == "no-protocol":
        status, body = srv.post("/", items.sign(client, target=process, data=b"x",
                                                tags=[("Type", "Message")]).raw)
    elif case == "unknown-process":
        status, body = srv.post("/", message(client, "Q" * 43, "return 1", 5).raw)
    elif case == "wrong-scheduler":
        proc = items.sign(client, tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                        ("Module", "M" * 43), ("Scheduler", "S" * 43)])
        status, body = srv.post("/", proc.raw)
    elif case == "oversized":
        big = items.sign(client, target=process, data=b"x" * (5 * 1024 * 1024),
                         tags=[("Data-Protocol", "ao"), ("Type", "Message")])
        status, body = srv.post("/", big.raw)
    elif case == "bad-limit":
        status = _status(srv, f"/{process}?limit=0")
        body = {"error": "x"}
    elif case == "unknown-result":
        status = _status(srv, f"/result/{'Z' * 43}?process-id={process}")
        body = {"error": "x"}
    elif case == "bad-dry-run":
        status, body = srv.post(f"/dry-run?process-id={process}", b"[1,2", "application/json")
    else:
        status, body = srv.post("/graphql", b"{}", "application/json")
    assert 400 <= status < 500, (status, body)
    assert body.get("error")
    assert _count(node) == before


def _status(srv: Server, path: str) -> int:
    try:
        with urllib.request.urlopen(srv.url + path, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


INGEST_REFUSALS = ("garbage", "forged", "unsigned-type", "no-protocol", "unknown-process",
                   "wrong-scheduler")


def _refused_item(client: NodeIdentity, process: str, case: str) -> bytes:
    good = message(client, process, "return 1", 98)
    if case == "garbage":
        return b"\x02\x00" + b"x" * 200
    if case == "forged":
        raw = bytearray(good.raw)
        raw[-1] ^= 0x01
        return bytes(raw)
    if case == "unsigned-type":
        return b"\x07\x00" + good.raw[2:]
    if case == "no-protocol":
        return items.sign(client, target=process, data=b"x", tags=[("Type", "Message")]).raw
    if case == "unknown-process":
        return message(client, "Q" * 43, "return 1", 5).raw
    return items.sign(client, tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                    ("Module", "M" * 43), ("Scheduler", "S" * 43)]).raw


def test_shard_processes_refuse_items_as_one_process_does(
        live: Live, tmp_path: Path, servers: list[Server]) -> None:
    """With ``--shards 2`` the front awaits the owning shard's answer on its event loop (no
    thread): a shard's refusal reaches the client with the status one process gives."""
    srv, _, client, process = live
    sharded = start_server(tmp_path / "node", (*SERVE[:-1], "--shards", "2", SERVE[-1]))
    servers.append(sharded)
    module = upload_module(sharded, client)
    spawned = spawn(sharded, client, module, "sharded")
    accepted = message(client, spawned, "return 1", 1)
    status, body = sharded.post("/", accepted.raw)
    assert status == 202 and body["id"] == accepted.id and body["slot"] == 1
    for case in INGEST_REFUSALS:
        one_status, one_body = srv.post("/", _refused_item(client, process, case))
        status, body = sharded.post("/", _refused_item(client, spawned, case))
        assert status == one_status and 400 <= status < 500, (case, status, body, one_body)
        assert body.get("error"), case
    status, body = sharded.post("/", accepted.raw)  # a repeat: the slot it already has
    assert status == 202 and body["slot"] == 1
