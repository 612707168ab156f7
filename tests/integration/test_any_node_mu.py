"""Any node is a messenger for any process (issue 14 step 2), with real peered ``serve``s on
loopback: items posted to the *wrong* node on purpose are forwarded and answered with the
hosting node's receipt, reads about a process are answered by the node hosting it, a process
whose module only a peer stores gets it from that peer, and an item for a peer that is down is
queued, answered 503 + Retry-After, and delivered once the peer is back (across a restart of
the forwarding node too)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from appliance.ao import items
from tests.integration.clients import client_identity, message, module_item, process_item
from tests.integration.peering import command, health, peer_known, poll, start_pair
from tests.integration.server import Server, start_server


def _call(url: str, body: bytes | None = None, content_type: str = "application/octet-stream",
          **headers: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())


def _pair(tmp_path: Path, servers: list[Server], shards: int = 1) -> tuple[Server, Server]:
    return start_pair(tmp_path, servers, ("--shards", str(shards)) if shards > 1 else ())


@pytest.mark.parametrize("shards", [1, 2])
def test_the_wrong_node_forwards_items_relays_reads_and_lends_modules(
        tmp_path: Path, servers: list[Server], shards: int) -> None:
    a, b = _pair(tmp_path, servers, shards)
    client = client_identity(tmp_path / "client")
    module = module_item(client)
    status, _, body = _call(a.url + "/", module.raw)  # the module is stored on a only
    assert status == 200 and body["id"] == module.id, body
    status, _, _ = _call(f"{b.url}/raw/{module.id}")
    assert status == 404  # b has not got it yet

    # A Process for b posted to a: forwarded; b fetches the module from a and checks it.
    process = process_item(b, client, module.id, "wrong-door")
    status, _, receipt = _call(a.url + "/", process.raw)
    assert status == 202, receipt
    assert receipt["id"] == receipt["processId"] == process.id and receipt["slot"] == 0
    assert receipt["forwardedTo"] == b.url and isinstance(receipt["timestamp"], int)
    assert b.get_json(f"/processes/{process.id}")["process_id"] == process.id
    assert b.get(f"/raw/{module.id}") == module.data

    # A Message to b's process posted to a: forwarded, b's slot; again: the same receipt.
    msg = message(client, process.id, "return 6 * 7", 1)
    status, _, first = _call(a.url + "/", msg.raw)
    assert status == 202 and first["id"] == msg.id and first["slot"] == 1, first
    status, _, again = _call(a.url + "/", msg.raw)
    assert status == 202 and (again["id"], again["slot"]) == (msg.id, 1), again

    # Reads from the wrong node are answered by b, as b answers them.
    path = f"/result/{msg.id}?process-id={process.id}"
    status, headers, result = _call(a.url + path)
    assert status == 200 and "42" in json.dumps(result["Output"]), result
    assert headers["AO-Answered-By"] == b.url
    assert result == b.get_json(path)
    status, _, page = _call(f"{a.url}/results/{process.id}?sort=DESC&limit=2")
    assert status == 200 and page == b.get_json(f"/results/{process.id}?sort=DESC&limit=2")
    dry = json.dumps({"Owner": client.address, "Data": "return 2 + 3",
                      "Tags": [{"name": "Action", "value": "Eval"}]}).encode()
    status, _, dried = _call(f"{a.url}/dry-run?process-id={process.id}", dry, "application/json")
    assert status == 200 and "5" in json.dumps(dried["Output"]), dried
    status, _, missing = _call(f"{a.url}/result/{'m' * 43}?process-id={process.id}")
    assert status == 404 and "error" in missing  # b's own answer, relayed

    # What a peer forwarded or relayed is answered where it lands, never passed on again.
    hop = {"AO-Forwarded-By": b.address}
    status, _, body = _call(a.url + "/", message(client, process.id, "return 0", 2).raw, **hop)
    assert status == 421 and f"scheduled by node {b.address} at {b.url}" in body["error"], body
    status, _, body = _call(a.url + path, **hop)
    assert status == 404, body

    # The Result is b's signed item: it verifies and names b.
    raw = b.get(f"/result-item/{msg.id}?process-id={process.id}")
    assert items.parse_verified(raw, 1 << 24).owner_address == b.address


def test_a_peer_down_gets_the_item_once_it_is_back(
        tmp_path: Path, servers: list[Server]) -> None:
    a, b = _pair(tmp_path, servers)
    client = client_identity(tmp_path / "client")
    module = module_item(client)
    assert _call(b.url + "/", module.raw)[0] == 200
    process = process_item(b, client, module.id, "down-and-up")
    assert _call(a.url + "/", process.raw)[0] == 202
    first = message(client, process.id, "return 1", 1)
    assert _call(a.url + "/", first.raw)[2]["slot"] == 1  # a learned b hosts it
    b.stop()

    late = message(client, process.id, "return 'late'", 2)
    status, headers, body = _call(a.url + "/", late.raw)
    assert status == 503, body
    assert int(headers["Retry-After"]) >= 1
    assert f"node {b.address} at {b.url}" in body["error"] and "queued" in body["error"]
    assert health(a.url)["forwards"] == {"delivered": 2, "pending": 1}
    status, _, body = _call(f"{a.url}/result/{first.id}?process-id={process.id}")
    assert status == 503 and b.address in body["error"], body  # a read: a clear error

    a.stop()  # the queued item survives a restart of the node that took it
    port_a, port_b = int(a.url.rsplit(":", 1)[1]), int(b.url.rsplit(":", 1)[1])
    b2 = start_server(b.data_dir, command(port_b, a.url))
    servers.append(b2)
    a2 = start_server(a.data_dir, command(port_a, b.url))
    servers.append(a2)

    def delivered() -> Any:
        status, _, value = _call(f"{b2.url}/result/{late.id}?process-id={process.id}")
        return value if status == 200 else None
    result = poll("the queued item to reach b", delivered)
    assert "late" in json.dumps(result["Output"])
    poll("a to learn b again", peer_known(a2, b2.url, b2.address))
    status, _, receipt = _call(a2.url + "/", late.raw)  # the client's retry: b's receipt
    assert status == 202 and receipt["id"] == late.id and receipt["slot"] == 2, receipt
