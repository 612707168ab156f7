"""ANS-104 interop with ``@dha-team/arbundles`` (what aoconnect signs with), both directions:
its items of signature types 1, 2 and 3 and its bundles verify here; ours verify there."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.ao import items
from appliance.errors import BadRequest
from appliance.node.bundles import encode_bundle, parse_bundle
from appliance.node.identity import NodeIdentity
from tests.support.paths import JS_DIR, node_modules

SCRIPT = JS_DIR / "ans104_interop.mjs"
LIMIT = 1 << 20


def _node(*args: str) -> str:
    node_modules()
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.run([node, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def theirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("arbundles") / "items.json"
    _node("make", str(out))
    made: dict[str, Any] = json.loads(out.read_text())
    return made


def _raw(entry: dict[str, Any]) -> bytes:
    return base64.b64decode(entry["raw"])


def test_arbundles_items_of_every_signature_type_verify(theirs: dict[str, Any]) -> None:
    kinds = {"arweave": 1, "ed25519": 2, "ethereum": 3}
    assert sorted({e["kind"] for e in theirs["items"]}) == sorted(kinds)
    for entry in theirs["items"]:
        item = items.parse_verified(_raw(entry), LIMIT)
        assert item.signature_type == kinds[entry["kind"]]
        assert item.id == entry["id"]
        if item.tags:
            assert ("Action", "Ünïcödé ✓") in item.tags and ("Empty", "") in item.tags
            assert item.target and len(item.anchor) == 32


def test_flipping_any_signed_part_of_their_items_fails(theirs: dict[str, Any]) -> None:
    for entry in theirs["items"]:
        raw = _raw(entry)
        item = items.parse_unverified(raw)
        sig_len, owner_len = items.SIGNATURE_TYPES[item.signature_type]
        for offset in (2, 2 + sig_len // 2, 2 + sig_len + owner_len // 2, len(raw) - 1):
            mutated = bytearray(raw)
            mutated[offset] ^= 0x01
            with pytest.raises(BadRequest):
                items.parse_verified(bytes(mutated), LIMIT)


def test_arbundles_bundle_parses_with_its_ids(theirs: dict[str, Any]) -> None:
    bundle = base64.b64decode(theirs["bundle"])
    assert [i.id for i in parse_bundle(bundle, LIMIT)] == theirs["bundle_ids"]
    with pytest.raises(BadRequest):
        parse_bundle(bundle[:-1], LIMIT)
    with pytest.raises(BadRequest):
        parse_bundle(bundle + b"\0", LIMIT)
    swapped = bytearray(bundle)
    swapped[64:96] = bytes(32)
    with pytest.raises(BadRequest, match="header says"):
        parse_bundle(bytes(swapped), LIMIT)


def test_high_s_ethereum_signature_is_refused(theirs: dict[str, Any]) -> None:
    raw = bytearray(_raw(next(e for e in theirs["items"] if e["kind"] == "ethereum")))
    s = int.from_bytes(raw[2 + 32:2 + 64], "big")
    raw[2 + 32:2 + 64] = (items._SECP256K1_ORDER - s).to_bytes(32, "big")
    with pytest.raises(BadRequest, match="type 3"):
        items.parse_verified(bytes(raw), LIMIT)


def test_our_items_and_bundles_verify_in_arbundles(tmp_path: Path) -> None:
    identity = NodeIdentity.load_or_create(tmp_path / "key")
    ours = [
        items.sign(identity, tags=[("Data-Protocol", "ao"), ("Type", "Result")], data=b"{}"),
        items.sign(identity, tags=[("Action", "ünï ✓")], data="☃".encode(),
                   target=items.sign(identity, tags=[]).id, anchor=b"a" * 32),
        items.sign(identity, tags=[]),
    ]
    spec = tmp_path / "verify.json"
    spec.write_text(json.dumps({
        "items": [base64.b64encode(i.raw).decode() for i in ours],
        "bundle": base64.b64encode(encode_bundle(ours)).decode()}))
    verdict = json.loads(_node("verify", str(spec)))
    assert verdict == {"items": [True, True, True], "bundle": True}


def test_unknown_signature_type_and_truncation_are_clear_errors() -> None:
    with pytest.raises(BadRequest, match="unsupported signature type 9"):
        items.parse_verified(b"\x09\x00" + bytes(200), LIMIT)
    with pytest.raises(BadRequest, match="truncated"):
        items.parse_verified(b"\x03\x00" + bytes(100), LIMIT)
