"""The AO-Core (mainnet) routes on a real node on loopback (docs/mainnet.md, plan steps 3-6):
items signed like aoconnect 0.0.98's, answers from the same schedule and signed Results as the
legacy routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from attestation.providers import EmulatedProvider
from tests.integration.clients import client_identity, upload_module
from tests.integration.inproc import serve_in_thread
from tests.integration.server import Server

Live = tuple[Server, NodeIdentity, str]
READ_TAGS = (("signing-format", "ans104"), ("accept-bundle", "true"),
             ("require-codec", "application/json"), ("Data-Protocol", "ao"),
             ("Type", "Message"), ("Variant", "ao.N.1"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("mainnet")
    with serve_in_thread(base / "node", EmulatedProvider(base / "tee")) as (srv, _node):
        client = client_identity(base / "client")
        yield srv, client, upload_module(srv, client)


def _post(srv: Server, path: str, body: bytes, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(srv.url + path, data=body, method="POST", headers={
        "Content-Type": "application/ans104", "codec-device": "ans104@1.0", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return int(resp.status), dict(resp.headers), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), bytes(exc.read())


def _spawn_item(srv: Server, client: NodeIdentity, module: str, name: str,
                device: str = "genesis-wasm@1.0") -> items.Item:
    return items.sign(client, data=b"1984", anchor=name.encode().ljust(32, b"-")[:32], tags=[
        ("device", "process@1.0"), ("scheduler-device", "scheduler@1.0"),
        ("push-device", "push@1.0"), ("execution-device", device),
        ("Authority", srv.address), ("Scheduler", srv.address), ("Module", module),
        ("Name", name), ("signing-format", "ans104"), ("accept-bundle", "true"),
        ("accept-codec", "httpsig@1.0"), ("Data-Protocol", "ao"), ("Type", "Process"),
        ("Variant", "ao.N.1")])


def _spawn(srv: Server, client: NodeIdentity, module: str, name: str) -> str:
    status, headers, body = _post(srv, "/push", _spawn_item(srv, client, module, name).raw)
    assert status == 200, body
    return headers["process"]


def _message(client: NodeIdentity, process: str, data: str, anchor: bytes) -> items.Item:
    return items.sign(client, target=process, data=data.encode(), anchor=anchor, tags=[
        ("Action", "Eval"), *READ_TAGS])


def _read(srv: Server, client: NodeIdentity, path: str, target: str = "") -> Any:
    item = items.sign(client, target=target, data=b"", tags=list(READ_TAGS))
    status, _headers, body = _post(srv, path, item.raw)
    assert status == 200, body
    return body.decode() if path.endswith("slot/current") else json.loads(body)


def test_spawn_message_and_read_results_by_slot(live: Live) -> None:
    srv, client, module = live
    process = _spawn(srv, client, module, "mainnet-flow")
    assert srv.get_json(f"/processes/{process}")["process_id"] == process
    ids = []
    for k, line in enumerate(("x = 41", "return x + 1")):
        msg = _message(client, process, line, f"m{k}".encode().ljust(32, b"-"))
        status, headers, body = _post(srv, f"/{process}~process@1.0/push", msg.raw)
        assert status == 200, body
        answer = json.loads(body)
        assert (answer["slot"], answer["id"], headers["slot"]) == (k + 1, msg.id, str(k + 1))
        assert srv.get_json(f"/{msg.id}?process-id={process}")["message"]["id"] == msg.id
        ids.append(msg.id)
    second = _read(srv, client, f"/{process}~process@1.0/compute/results=2", process)
    legacy = srv.get_json(f"/result/{ids[1]}?process-id={process}")
    assert second["raw"] == second["results"]["raw"] == legacy
    assert "42" in json.dumps(legacy["Output"])
    signed = items.parse_verified(srv.get(f"/result-item/{ids[1]}?process-id={process}"),
                                  1 << 24)
    assert (second["result-id"], second["slot"], second["message"]) == (signed.id, 2, ids[1])
    by_id = _read(srv, client, f"/{process}~process@1.0/compute/results={ids[1]}", process)
    assert by_id == second
    assert _read(srv, client, f"/{process}/slot/current") == "2"
    assert _read(srv, client, f"/{process}/compute/results=2")["raw"] == legacy
    assert _read(srv, client, f"/{process}~process@1.0/compute=1")["slot"] == 1
    assert srv.get(f"/{process}/slot/current") == b"2"  # unsigned GETs, as from curl
    assert json.loads(srv.get(f"/{process}~process@1.0/compute/results=2")) == second
    assert json.loads(srv.get(f"/{process}~process@1.0/now"))["slot"] == 2


def test_dry_run_answers_and_schedules_nothing(live: Live) -> None:
    srv, client, module = live
    process = _spawn(srv, client, module, "mainnet-dry")
    item = items.sign(client, target=process, data=b"return 1+1", tags=list(READ_TAGS))
    status, _headers, body = _post(
        srv, f"/{process}~process@1.0/as=execution/compute&Action=Eval&Two%20Words=a%20b",
        item.raw)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["raw"] == answer["results"]["raw"]
    assert answer["raw"]["Output"]["data"] == "2"
    assert _read(srv, client, f"/{process}/slot/current") == "0"
    assert len(srv.get_json(f"/{process}")["edges"]) == 1


def test_refusals_change_nothing(live: Live) -> None:
    srv, client, module = live
    process = _spawn(srv, client, module, "mainnet-refusals")
    other = _spawn(srv, client, module, "mainnet-other")
    wrong = _message(client, other, "1", b"w".ljust(32, b"-"))
    status, _h, body = _post(srv, f"/{process}~process@1.0/push", wrong.raw)
    assert status == 400 and "target" in json.loads(body)["error"]
    httpsig = {"Content-Type": "application/json", "Signature": "sig=:AA==:",
               "Signature-Input": 'sig=("a");alg="rsa-pss-sha512"'}
    status, _h, body = _post(srv, f"/{process}~process@1.0/push", b"{}", httpsig)
    assert status == 422 and "ans104" in json.loads(body)["error"]
    status, _h, body = _post(srv, "/push", _spawn_item(srv, client, module, "lua",
                                                       "lua@5.3a").raw)
    assert status == 422 and "genesis-wasm@1.0" in json.loads(body)["error"]
    foreign = items.sign(client, data=b"1984", tags=[
        ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module),
        ("Scheduler", "S" * 43), ("execution-device", "genesis-wasm@1.0")])
    assert _post(srv, "/push", foreign.raw)[0] == 421
    forged = bytearray(_message(client, process, "1", b"f".ljust(32, b"-")).raw)
    forged[-1] ^= 1
    assert _post(srv, f"/{process}~process@1.0/compute/results=0", bytes(forged))[0] == 400
    assert _post(srv, f"/{process}~process@1.0/compute/results=99",
                 items.sign(client, data=b"", tags=list(READ_TAGS)).raw)[0] == 404
    assert len(srv.get_json(f"/{process}")["edges"]) == 1
    assert len(srv.get_json(f"/{other}")["edges"]) == 1


@pytest.mark.parametrize(("path", "word"), [
    ("/ledger~node-process@1.0/now/balance/x", "free to use"),
    ("/~p4@1.0/balance", "free to use"),
    ("/~meta@1.0/info/operator", "not served"),
    ("/{pid}~wasm-64@1.0/compute", "not served"),
    ("/{pid}~process@1.0/schedule", "not served")])
def test_payments_and_other_devices_answer_json_errors(live: Live, path: str,
                                                       word: str) -> None:
    srv, _client, _module = live
    for method in ("GET", "POST"):
        req = urllib.request.Request(srv.url + path.replace("{pid}", "P" * 43), method=method,
                                     data=b"" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(req, timeout=60)
        assert caught.value.code == 404
        assert word in json.loads(caught.value.read())["error"]
