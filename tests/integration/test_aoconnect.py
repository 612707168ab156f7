"""The unmodified aoconnect client against a real node on loopback (issue 3's acceptance flow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.ao import items
from attestation.providers import EmulatedProvider
from tests.integration.clients import client_identity, upload_module
from tests.integration.inproc import serve_in_thread
from tests.integration.server import Server
from tests.support.paths import JS_DIR, node_modules


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    node_modules()
    with serve_in_thread(tmp_path / "node", EmulatedProvider(tmp_path / "tee")) as (srv, _node):
        yield srv


def whole_schedule(server: Server, process: str) -> list[dict[str, Any]]:
    """Every schedule edge of a process, paging by slot."""
    edges: list[dict[str, Any]] = []
    while True:
        page = server.get_json(f"/{process}?limit=1000&from-nonce={len(edges)}")
        edges += page["edges"]
        if not page["page_info"]["has_next_page"]:
            return edges


def verify_result_chain(server: Server, process: str) -> list[items.Item]:
    """Every slot's signed Result verifies and links to the previous one, back to slot 0."""
    edges = whole_schedule(server, process)
    chain: list[items.Item] = []
    for slot, edge in enumerate(edges):
        assignment = {t["name"]: t["value"] for t in edge["node"]["assignment"]["tags"]}
        assert assignment["Nonce"] == str(slot), "slots are contiguous from 0"
        message = edge["node"]["message"]["id"]
        result = items.parse_verified(
            server.get(f"/result-item/{message}?process-id={process}"), 1 << 24)
        assert items.first_tag(result, "Nonce") == str(slot)
        assert items.first_tag(result, "Message") == message
        assert items.first_tag(result, "Assignment") == edge["node"]["assignment"]["id"]
        assert items.first_tag(result, "Hash-Chain") == assignment["Hash-Chain"]
        previous = items.first_tag(result, "Previous-Result")
        assert previous == (chain[-1].id if chain else None)
        chain.append(result)
    return chain


def test_aoconnect_spawn_message_result_results_dryrun(server: Server, tmp_path: Path) -> None:
    module = upload_module(server, client_identity(tmp_path / "client"))
    env = {**os.environ, "NODE_URL": server.url, "NODE_ADDRESS": server.address,
           "MODULE_ID": module, "GRAPHQL_URL": f"{server.url}/graphql"}
    node = shutil.which("node")
    assert node, "node is required"
    proc = subprocess.run([node, str(JS_DIR / "aoconnect_flow.mjs")], cwd=JS_DIR, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "42" in json.dumps(out["evalAdd"]["res"]["Output"])
    assert "Pong" in json.dumps(out["inbox"]["res"]["Output"])
    assert "Error" not in out["evalAdd"]["res"], "the CU leaves Error out when there is none"
    assert "boom" in json.dumps(out["evalError"]["res"]["Error"])
    failed = out["evalError"]["res"]
    assert failed["Output"] is not None and failed["Messages"] == []
    assert out["results"]["edges"], "results() returned nothing"
    assert out["dryrun"]["Messages"][0]["Data"] == "42"

    for process in out["processes"]:
        chain = verify_result_chain(server, process)
        assert len(chain) >= 2
    attestation = items.first_tag(chain[0], "Attestation")
    assert attestation
    found = server.post("/graphql", json.dumps({
        "query": "query($id: ID!) { transaction(id: $id) { tags { name value } } }",
        "variables": {"id": attestation}}).encode(), "application/json")[1]
    tags = {t["name"]: t["value"] for t in found["data"]["transaction"]["tags"]}
    assert tags["Type"] == "Attestation"
    assert tags["TEE-Platform"] in ("emulated",)


def test_aoconnect_mainnet_mode_spawn_message_result_dryrun_results(server: Server,
                                                                   tmp_path: Path) -> None:
    """Unmodified aoconnect 0.0.98 in MODE 'mainnet' (AO-Core routes, docs/mainnet.md)."""
    module = upload_module(server, client_identity(tmp_path / "client"))
    env = {**os.environ, "NODE_URL": server.url, "MODULE_ID": module}
    node = shutil.which("node")
    assert node, "node is required"
    proc = subprocess.run([node, str(JS_DIR / "aoconnect_mainnet_flow.mjs")], cwd=JS_DIR,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    process = out["process"]
    assert server.get_json(f"/processes/{process}")["process_id"] == process
    assert out["evalAdd"]["slot"] == 1
    assert out["evalAdd"]["res"]["Output"]["data"] == "42"
    assert out["inbox"]["res"]["Output"]["data"] == "hi"
    assert out["dryrunEval"]["Output"]["data"] == "2"
    assert out["dryrunAnswer"]["Messages"][0]["Data"] == "42"
    [edge] = out["results"]["edges"]
    slot = int(edge["cursor"])
    assert slot >= out["inbox"]["slot"]
    schedule = whole_schedule(server, process)
    message = schedule[slot]["node"]["message"]["id"]
    legacy = server.get_json(f"/result/{message}?process-id={process}")
    assert edge["node"]["Output"] == legacy["Output"]
    assert len(verify_result_chain(server, process)) == len(schedule)
