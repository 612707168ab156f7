"""``ao-appliance ctl`` end to end: the console script against the live server."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from appliance.ao import items
from appliance.cli import build_parser
from tests.rpc.support import Live, message_item, process_item
from tests.support.paths import REPO

SCRIPT = Path(sys.executable).parent / "ao-appliance"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "appliance.cli"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed once the socket is; nobody listens


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, "ctl", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _run_all(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_run, args) for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def _lines(done: subprocess.CompletedProcess[str]) -> list[Any]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _tls(live: Live, who: str = "operator") -> list[str]:
    cred = getattr(live.pki, who)
    return ["--address", live.tcp, "--ca", str(live.pki.ca), "--cert", str(cred.cert),
            "--key", str(cred.key)]


def test_ctl_covers_every_rpc(live: Live, tmp_path: Path) -> None:
    unix = ["--unix", str(live.unix)]
    msg = message_item(live.client, live.process_id, "return 40 + 2", 424242)
    (tmp_path / "msg.bin").write_bytes(msg.raw)
    proc = process_item(live.client, live.module_id, live.node.identity.address, "ctl")
    (tmp_path / "proc.bin").write_bytes(proc.raw)
    (tmp_path / "module.bin").write_bytes(live.node.item_raw(live.module_id))
    sent = _lines(_run([*unix, "send", str(tmp_path / "msg.bin")]))[0]
    assert sent["id"] == msg.id and sent["type"] == "Message" and sent["slot"] >= 1
    (tmp_path / "dry.json").write_text(json.dumps({
        "Tags": [{"name": "Action", "value": "Eval"}], "Data": "return 32 * 32",
        "Owner": live.client.address}))
    out = _run_all({
        "status": [*_tls(live), "status"],
        "attestation": [*unix, "attestation", "--nonce", "c0ffee",
                        "--out", str(tmp_path / "att.bin")],
        "add-module": [*unix, "add-module", str(tmp_path / "module.bin")],
        "spawn": [*_tls(live, "robot"), "spawn", str(tmp_path / "proc.bin")],
        "result": [*unix, "result", "--process", live.process_id, "--message", msg.id, "--out",
                   str(tmp_path / "result.bin")],
        "stream": [*unix, "stream", live.process_id, "--from", "0", "--limit", "2"],
        "dry-run-flags": [*unix, "dry-run", live.process_id, "--tag", "Action=Eval",
                          "--data", "return 6 * 7", "--owner", live.client.address],
        "dry-run-file": [*unix, "dry-run", live.process_id, "--message",
                         str(tmp_path / "dry.json")],
        "processes": [*unix, "processes", "--page-size", "1", "--all"],
        "checkpoint": [*unix, "checkpoint", "--process", live.process_id],
        "services": [*unix, "services"],
    })
    assert _lines(out["status"])[0]["address"] == live.node.identity.address
    attestation = _lines(out["attestation"])[0]
    assert base64.b64decode(attestation["nonce"]) == bytes.fromhex("c0ffee")
    assert (tmp_path / "att.bin").read_bytes() == base64.b64decode(attestation["item"])
    assert _lines(out["add-module"])[0]["id"] == live.module_id
    assert _lines(out["spawn"])[0] == {"id": proc.id, "type": "Process", "process_id": proc.id,
                                       "slot": 0}
    result = _lines(out["result"])[0]
    assert result["result"]["Output"]["data"] == "42" and result["slot"] == sent["slot"]
    signed = items.parse_verified((tmp_path / "result.bin").read_bytes(), 1 << 24)
    assert signed.id == result["result_id"]
    assert [e["slot"] for e in _lines(out["stream"])] == [0, 1]
    assert _lines(out["dry-run-flags"])[0]["result"]["Output"]["data"] == "42"
    assert _lines(out["dry-run-file"])[0]["result"]["Output"]["data"] == "1024"
    listed = {p["id"] for p in _lines(out["processes"])}
    assert live.process_id in listed and len(listed) >= 2
    checkpoint = _lines(out["checkpoint"])[0]
    assert checkpoint["slot"] >= sent["slot"] and len(checkpoint["sha256"]) == 64
    services = {s["service"]: s["methods"] for s in _lines(out["services"])}
    assert "StreamResults" in services["ao_appliance.v1.Operator"]
    assert "Check" in services["grpc.health.v1.Health"]


@pytest.mark.parametrize(("case", "code"), [
    ("unknown-result", 1), ("not-allowed", 1), ("bad-item", 1), ("unreachable", 2),
    ("rogue-ca", 2), ("half-tls", 2), ("no-target", 2), ("dead-port", 2), ("wrong-flag", 2),
    ("no-process", 2)])
def test_ctl_exit_codes(live: Live, tmp_path: Path, case: str, code: int) -> None:
    unix = ["--unix", str(live.unix)]
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x02\x00garbage")
    args = {
        "unknown-result": [*unix, "result", live.process_id, "Z" * 43],
        "not-allowed": [*_tls(live, "intruder"), "status"],
        "bad-item": [*unix, "send", str(garbage)],
        "unreachable": ["--unix", str(tmp_path / "nobody.sock"), "--timeout", "1", "status"],
        "rogue-ca": [*_tls(live, "rogue"), "--timeout", "2", "status"],
        "half-tls": ["--address", live.tcp, "--ca", str(live.pki.ca), "status"],
        "no-target": ["status"],
        "dead-port": ["--address", f"127.0.0.1:{_closed_port()}", "status"],
        "wrong-flag": [*unix, "result", "--proces", live.process_id],
        "no-process": [*unix, "checkpoint"],
    }[case]
    done = _run(args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stdout == ""
    if case == "dead-port":
        assert "cannot connect: Connection refused" in done.stderr
    if case in ("wrong-flag", "no-process"):
        assert done.stderr.startswith("usage: ao-appliance ctl "), done.stderr
        assert "--proces" in done.stderr or "--process is required" in done.stderr
    if code == 1:
        error = json.loads(done.stderr.splitlines()[-1])
        assert error["code"] == {"unknown-result": "NOT_FOUND", "not-allowed":
                                 "PERMISSION_DENIED", "bad-item": "INVALID_ARGUMENT"}[case]
        assert error["message"]


def test_ids_starting_with_a_dash_are_values_not_flags() -> None:
    """About one AO id in 64 starts with '-'; argparse took such ids for unknown flags (a random
    message id made ``test_ctl_covers_every_rpc`` fail now and then)."""
    dashed = "-" + "a" * 42
    args = build_parser().parse_args(
        ["ctl", "--unix", "/x", "result", "--process", dashed, "--message", dashed])
    assert args.process_id == dashed and args.message_id == dashed
    args = build_parser().parse_args(["ctl", "--unix", "/x", "stream", dashed, "--from", "0"])
    assert args.process == dashed
