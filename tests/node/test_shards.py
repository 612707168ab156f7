"""The Node façade over several shards, in this process and each in a process of its own:
placement, routing, merged reads, and a shard process killed and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.errors import NotFound, ShardUnavailable
from appliance.metrics import NodeMetrics
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node, local_shards
from appliance.node.observer import NodeObserver
from appliance.node.placement import Placement, hashed_owner
from appliance.node.remote_shard import RemoteShard, process_shards
from appliance.node.settings import NodeSettings
from appliance.node.shard import Shard
from attestation.evidence import Platform
from attestation.providers import EmulatedProvider
from tests.node.test_node_core import _eval, _process
from tests.support.echo import ECHO_OUTPUT, echo_module, relay_module


@pytest.fixture(params=["threads", "processes"])
def mode(request: pytest.FixtureRequest) -> str:
    """Where the shards run: in the test's process, or each in a process of its own."""
    return str(request.param)


def _sharded(data: Path, count: int, mode: str = "threads",
             observer: NodeObserver | None = None, max_push_depth: int = 64) -> Node:
    settings = NodeSettings(data_dir=data, workers=count, shards=count,
                            max_push_depth=max_push_depth)
    identity = NodeIdentity.load_or_create(data)
    provider = EmulatedProvider(data / "tee")
    shards: list[Shard | RemoteShard]
    if mode == "processes":
        shards = list(process_shards(settings, key_dir=data, tee=Platform.EMULATED,
                                     tee_state_dir=data / "tee", config_digest=b"\0" * 32,
                                     log_level="warning", observer=observer or NodeObserver()))
    else:
        shards = list(local_shards(settings, identity, provider, b"\0" * 32, count))
    return Node(settings, identity, provider, b"\0" * 32, observer=observer, shards=shards)


def _poll_spawned(node: Node, process_id: str, count: int) -> list[items.Item]:
    """The ``Action: Spawned`` messages of ``process_id``'s schedule, once ``count`` are there
    and evaluated."""
    deadline = time.monotonic() + 120
    while True:
        page, _ = node.schedule_page(process_id)
        spawned = [m for _, m, _ in page if items.first_tag(m, "Action") == "Spawned"]
        if len(spawned) >= count and all(node.result_now(process_id, m.id)[1] is not None
                                         for m in spawned):
            return spawned
        assert time.monotonic() < deadline, f"{len(spawned)} Spawned notices of {count}"
        time.sleep(0.05)


def test_placement_keeps_known_processes_and_hashes_new_ones() -> None:
    placement = Placement(4)
    assert placement.owner("a" * 43) == hashed_owner("a" * 43, 4)
    placement.learn(3, ["b" * 43])
    assert placement.owner("b" * 43) == 3


def test_processes_spread_over_shards_answer_and_survive_a_restart(tmp_path: Path,
                                                                   mode: str) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    data = tmp_path / "node"
    node = _sharded(data, 2, mode)
    try:
        module = echo_module(client)  # no npm needed: routing is what is tested
        node.ingest(module.raw)
        procs = [_process(client, module.id, node.identity.address, f"p{i}") for i in range(5)]
        wanted = 1 - node.placement.owner(procs[0].id)  # ids are random: make both shards hold one
        procs.append(next(p for p in (_process(client, module.id, node.identity.address, f"q{i}")
                                      for i in range(100)) if node.placement.owner(p.id) == wanted))
        for proc in procs:
            node.ingest(proc.raw)
        owners = {node.placement.owner(p.id) for p in procs}
        assert owners == {0, 1}, "six processes land on both shards"
        sent = [_eval(client, p.id, f"message {i}", i) for i, p in enumerate(procs)]
        for message in sent:
            node.ingest(message.raw)
        for proc, message in zip(procs, sent, strict=True):
            assert node.result(proc.id, message.id)["Output"] == ECHO_OUTPUT
        assert node.status()["processes"] == 6
        listed = node.process_page(0, 100)
        assert sorted(r.id for r in listed) == sorted(p.id for p in procs)
        first = node.process_page(0, 4)
        rest = node.process_page(first[-1].cursor, 100)
        assert sorted(r.id for r in first + rest) == sorted(p.id for p in procs)
        found = node.find_items(tags=[("Type", ["Process"], False)], limit=100)
        assert {items.parse_unverified(raw).id for _, raw in found} == {p.id for p in procs}
        page = node.find_items(tags=[("Type", ["Process"], False)], limit=4)
        more = node.find_items(tags=[("Type", ["Process"], False)], after_row=page[-1][0],
                               limit=100)
        assert len({r for r, _ in page + more}) == 6
        placed = {p.id: node.placement.owner(p.id) for p in procs}
    finally:
        node.close()
    again = _sharded(data, 3, mode)  # one more shard: processes stay where they are
    try:
        assert {p.id: again.placement.owner(p.id) for p in procs} == placed
        for proc, message in zip(procs, sent, strict=True):
            assert again.result_now(proc.id, message.id)[1] is not None
    finally:
        again.close()


def test_an_outbox_item_another_shard_owns_is_delivered_there_once(tmp_path: Path,
                                                                   mode: str) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    data = tmp_path / "node"
    node = _sharded(data, 2, mode, max_push_depth=1)  # the relay answers its Spawned notices too
    address = node.identity.address
    try:
        echo = echo_module(client)
        node.ingest(echo.raw)
        names = (f"t{i}" for i in range(100))
        target = next(p for p in (_process(client, echo.id, address, n) for n in names)
                      if node.placement.owner(p.id) == 1)
        node.ingest(target.raw)
        local = next(p for p in (_process(client, echo.id, address, n) for n in names)
                     if node.placement.owner(p.id) == 0)
        node.ingest(local.raw)
        assigned = _eval(client, local.id, "assign me", 7)  # stored on shard 0 only
        node.ingest(assigned.raw)
        relay = relay_module(client, target.id, spawn_module=echo.id, assign=assigned.id)
        node.ingest(relay.raw)
        sender = next(p for p in (_process(client, relay.id, address, n) for n in names)
                      if node.placement.owner(p.id) == 0)
        node.ingest(sender.raw)
        message = _eval(client, sender.id, "go", 1)
        node.ingest(message.raw)
        assert node.result(sender.id, message.id)["Output"] == "relayed"
        deadline = time.monotonic() + 120
        while node.shards[0].outbox_by_status().get("forwarding") and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        # slots 0 (the process) and 1 each relay one Message and one Spawn; the Assignment once;
        # each Spawn's notice comes back to the sender, whose relays of it are one push too deep
        spawned = _poll_spawned(node, sender.id, 2)
        assert {items.first_tag(m, "From-Process") for m in spawned} == \
            {items.first_tag(m, "Process") for m in spawned}
        assert node.shards[0].outbox_by_status() == {"scheduled": 5, "dropped-depth": 4}
        page, _ = node.schedule_page(target.id)
        relayed = [m for _, m, _ in page if items.first_tag(m, "Action") == "Relay"]
        assert len(relayed) == 2
        assert {items.first_tag(m, "From-Process") for m in relayed} == {sender.id}
        for m in relayed:
            assert node.result(target.id, m.id)["Output"] == ECHO_OUTPUT
        assert sum(m.id == assigned.id for _, m, _ in page) == 1
        assert node.result(target.id, assigned.id)["Output"] == ECHO_OUTPUT
        spawned = [r for r in node.process_page(0, 100)
                   if r.id not in (target.id, sender.id, local.id)]
        assert len(spawned) == 2
        for row in spawned:
            assert node.placement.owner(row.id) == hashed_owner(row.id, 2)
            assert node.shards[hashed_owner(row.id, 2)].process_ids().count(row.id) == 1
    finally:
        node.close()
    again = _sharded(data, 2, mode, max_push_depth=1)  # a restart pushes nothing twice
    try:
        page, _ = again.schedule_page(target.id)
        assert sum(items.first_tag(m, "Action") == "Relay" for _, m, _ in page) == 2
        assert sum(m.id == assigned.id for _, m, _ in page) == 1
        assert again.shards[0].outbox_by_status() == {"scheduled": 5, "dropped-depth": 4}
        page, _ = again.schedule_page(sender.id)
        assert sum(items.first_tag(m, "Action") == "Spawned" for _, m, _ in page) == 2
    finally:
        again.close()


def test_a_killed_shard_process_restarts_alone_and_resumes(tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    metrics = NodeMetrics()
    node = _sharded(tmp_path / "node", 2, "processes", metrics)
    metrics.attach(node)
    try:
        module = echo_module(client)
        node.ingest(module.raw)
        names = (f"k{i}" for i in range(200))
        procs = [next(p for p in (_process(client, module.id, node.identity.address, n)
                                  for n in names) if node.placement.owner(p.id) == k)
                 for k in (0, 1)]
        for proc in procs:
            node.ingest(proc.raw)
        before = [_eval(client, p.id, "before", 1) for p in procs]
        for message in before:
            node.ingest(message.raw)
        for proc, message in zip(procs, before, strict=True):
            assert node.result(proc.id, message.id)["Output"] == ECHO_OUTPUT
        victim = node.shards[1]
        assert isinstance(victim, RemoteShard)
        old_pid = victim.pid
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the front has seen it die and restarted it
            metrics.exposition()  # a scrape while the shard restarts leaves its gauges out
            try:
                if victim.pid != old_pid and node.result_now(procs[1].id, before[1].id)[1]:
                    break
            except ShardUnavailable:
                pass
            time.sleep(0.05)
        assert victim.pid != old_pid
        assert b"ao_appliance_shard_restarts_total 1.0" in metrics.exposition()[0]
        after = [_eval(client, p.id, "after", 2) for p in procs]
        for message in after:
            node.ingest(message.raw)
        for proc, message in zip(procs, after, strict=True):
            assert node.result(proc.id, message.id)["Output"] == ECHO_OUTPUT
        assert node.shards[0].process_ids() == [procs[0].id]
        assert node.status()["processes"] == 2
    finally:
        node.close()


def test_a_message_to_no_process_of_the_node_is_refused_by_its_sender(tmp_path: Path,
                                                                      mode: str) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    node = _sharded(tmp_path / "node", 2, mode)
    try:  # a wallet whose id hashes to the other shard: nothing is pushed there
        wallet = next(w for w in (f"{k:043d}" for k in range(100)) if hashed_owner(w, 2) == 1)
        relay = relay_module(client, wallet)
        node.ingest(relay.raw)
        sender = next(p for p in (_process(client, relay.id, node.identity.address, f"w{i}")
                                  for i in range(100)) if node.placement.owner(p.id) == 0)
        node.ingest(sender.raw)
        message = _eval(client, sender.id, "go", 1)
        node.ingest(message.raw)
        assert node.result(sender.id, message.id)["Output"] == "relayed"
        assert node.shards[0].outbox_by_status() == {"pending-remote": 2}
        assert node.shards[1].outbox_by_status() == {}
    finally:
        node.close()


def test_submitted_calls_answer_on_the_loop_and_outlive_a_cancelled_waiter(
        tmp_path: Path, mode: str) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    node = _sharded(tmp_path / "node", 2, mode)
    try:
        module = echo_module(client)
        assert node.submit_ingest(module.raw) is None  # a Module: every shard, on a thread
        node.ingest(module.raw)
        proc = _process(client, module.id, node.identity.address, "submitted")
        first, second = (_eval(client, proc.id, f"message {n}", n) for n in (1, 2))
        submitted = node.submit_ingest(proc.raw)
        if mode == "threads":  # shards in this process: their ingest blocks, so a thread calls
            assert submitted is None and node.submit_result_now(proc.id, first.id) is None
            return
        assert submitted is not None and submitted.result(60).id == proc.id

        async def ingest_then_give_up() -> None:
            future = node.submit_ingest(first.raw)
            assert future is not None
            waiter = asyncio.ensure_future(asyncio.wrap_future(future))
            await asyncio.sleep(0)
            waiter.cancel()  # a client gone: the shard still takes the item
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert (await asyncio.wrap_future(future)).slot == 1

        asyncio.run(ingest_then_give_up())
        again = node.submit_ingest(second.raw)
        assert again is not None and again.result(60).slot == 2
        assert node.result(proc.id, second.id)["Output"] == ECHO_OUTPUT
        now = node.submit_result_now(proc.id, second.id)
        assert now is not None and now.result(60)[1] == node.result(proc.id, second.id)
        unknown = node.submit_ingest(_eval(client, "Q" * 43, "stray", 3).raw)
        assert unknown is not None
        with pytest.raises(NotFound):
            unknown.result(60)
    finally:
        node.close()
