"""Isolation: a message that runs to its limit delays only its own process. Real worker
processes and the loop module (tests/support/modules.py): while two processes loop on a node
with two workers, a third moves to an extra worker (the spare) and is answered, its state
intact; the pool's spare worker is kept, taken and started again."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime

from appliance.compute import ComputeLimits, jsjson
from appliance.errors import EvaluationError
from appliance.metrics import NodeMetrics
from appliance.node.evaluator import EvaluatorPool, PendingCall, ProcessMoved
from tests.node.test_node_core import _eval, _process
from tests.support.echo import ECHO_FORMAT
from tests.support.modules import LOOP_DATA, LOOP_WAT, loop_node

LOOP_SECONDS = 30.0
"""The loopers' wall-clock limit: far longer than moving and answering the third takes."""
PATIENCE = 120.0
"""How long a test polls before it gives up (a loaded CI machine is slow, never this slow)."""


def _until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _moves(metrics: NodeMetrics) -> float:
    return metrics.registry.get_sample_value("ao_appliance_process_moves_total") or 0.0


def test_a_process_is_answered_while_two_others_loop_and_its_state_survives_the_move(
        tmp_path: Path) -> None:
    metrics = NodeMetrics()
    node, client, module = loop_node(tmp_path, metrics, LOOP_SECONDS,
                                     result_wait_seconds=PATIENCE)
    try:
        procs = [_process(client, module.id, node.identity.address, name)
                 for name in ("looper-a", "looper-b", "third")]
        for proc in procs:
            node.ingest(proc.raw)
        looper_a, looper_b, third = procs
        for proc in procs:  # each process has evaluated its spawn (count 1)
            assert node.result(proc.id, proc.id)["Output"] == "1"
        before = [_eval(client, third.id, f"before {i}", i) for i in range(2)]
        for message in before:
            node.ingest(message.raw)
        assert [node.result(third.id, m.id)["Output"] for m in before] == ["2", "3"]

        loops = [_eval(client, p.id, LOOP_DATA, 10) for p in (looper_a, looper_b)]
        for message in loops:
            node.ingest(message.raw)
        pool = node.home.pool
        _until("both workers to loop", lambda: pool.held_workers() >= 2)

        during = _eval(client, third.id, "during", 11)
        node.ingest(during.raw)
        answered = node.result(third.id, during.id)
        # causality, not timing: the loopers were still in their loops when it was answered
        looping = [node.result_now(p.id, m.id)[1] for p, m in zip(
            (looper_a, looper_b), loops, strict=True)]
        assert looping == [None, None], "the third process waited for a looper's limit"
        assert answered["Output"] == "4", "the moved process lost its state"
        assert answered["Error"] is None
        assert _moves(metrics) >= 1
        assert pool.generation(third.id) not in {
            pool.generation(looper_a.id), pool.generation(looper_b.id)}, "it left the loopers"

        for proc, message in zip((looper_a, looper_b), loops, strict=True):
            stopped = node.result(proc.id, message.id)
            assert stopped["Error"] == f"wall-clock limit exceeded ({LOOP_SECONDS:g} s)"
        after = [_eval(client, p.id, "after", 12) for p in procs]
        for message in after:
            node.ingest(message.raw)
        outputs = [node.result(p.id, m.id)["Output"] for p, m in zip(procs, after, strict=True)]
        assert outputs == ["2", "2", "5"], "loops roll back; the third's count goes on"
        assert metrics.registry.get_sample_value(
            "ao_appliance_evaluation_divergences_total") == 0, "the replay after the move differs"
    finally:
        node.close()


def _batch(data: str) -> list[tuple[bytes, bytes]]:
    msg = {"Id": "m", "Target": "p", "Owner": "o", "From": "o", "Tags": [], "Data": data}
    return [(jsjson.stringify(msg), b"{}")]


def test_a_pool_moves_a_process_off_a_busy_worker_and_empties_the_extra_once_unused(
        tmp_path: Path) -> None:
    module = tmp_path / "loop.wasm"
    module.write_bytes(wasmtime.wat2wasm(LOOP_WAT))
    limits = ComputeLimits(wall_clock_seconds=5.0)  # only "the looper still runs 0.2 s on"
    moved: list[str] = []
    retired: list[list[str]] = []

    def retire(process_ids: list[str]) -> None:
        retired.append(process_ids)
        for pid in process_ids:
            pool.close(pid)

    pool = EvaluatorPool(1, tmp_path / "cache", move_after=0.2, extra_idle_seconds=0.5,
                         on_move=moved.append, on_retire=retire)
    try:
        assert pool.worker_count == 2, "the base worker and a spare"
        pool.open("looper", module, ECHO_FORMAT, limits, None)
        pool.open("other", module, ECHO_FORMAT, limits, None)
        assert pool.evaluate("other", _batch("x"))[0]["Output"] == "1"
        assert pool.generation("looper") == pool.generation("other"), "one base worker"
        looping = pool.begin_evaluate("looper", _batch(LOOP_DATA))
        moved_off = False
        try:
            pool.evaluate("other", _batch("y"))
        except ProcessMoved:
            moved_off = True
        assert moved_off and moved == ["other"]
        assert pool.generation("other") != pool.generation("looper")
        pool.open("other", module, ECHO_FORMAT, limits, None)  # reopened: a fresh count
        assert pool.evaluate("other", _batch("y"))[0]["Output"] == "1"
        assert pool.worker_count == 2, "the spare took it; one extra at most beside one base"
        _until("the unused extra worker to be emptied", lambda: retired == [["other"]])
        assert pool.worker_count == 2, "the emptied extra stays as the spare"
        stopped = looping.result()[0]
        assert stopped["Error"] == "wall-clock limit exceeded (5 s)"
        pool.open("other", module, ECHO_FORMAT, limits, None)  # back on the base worker
        assert pool.generation("other") == pool.generation("looper")
        assert pool.evaluate("other", _batch("z"))[0]["Output"] == "1"
    finally:
        pool.stop()


def test_a_pool_keeps_one_spare_worker_replenishes_it_when_taken_and_stops_surplus_extras(
        tmp_path: Path) -> None:
    module = tmp_path / "loop.wasm"
    module.write_bytes(wasmtime.wat2wasm(LOOP_WAT))
    limits = ComputeLimits(wall_clock_seconds=5.0)  # as above
    retired: list[str] = []

    def retire(process_ids: list[str]) -> None:
        retired.extend(process_ids)
        for pid in process_ids:
            pool.close(pid)

    without = EvaluatorPool(2, tmp_path / "cache")
    try:
        assert without.worker_count == 2, "no moves, no spare"
    finally:
        without.stop()
    pool = EvaluatorPool(2, tmp_path / "cache", move_after=0.2, extra_idle_seconds=0.5,
                         on_retire=retire)
    loops: list[PendingCall] = []
    try:
        assert pool.worker_count == 3, "two base workers and a spare"
        for pid in ("looper-a", "looper-b", "other"):  # "other" shares looper-a's worker
            pool.open(pid, module, ECHO_FORMAT, limits, None)
        assert pool.generation("other") == pool.generation("looper-a")
        assert pool.worker_count == 3, "new processes go to base workers, not the spare"
        loops = [pool.begin_evaluate(pid, _batch(LOOP_DATA)) for pid in ("looper-a", "looper-b")]
        with pytest.raises(ProcessMoved):
            pool.evaluate("other", _batch("y"))
        assert pool.generation("other") not in {pool.generation("looper-a"),
                                                pool.generation("looper-b")}
        assert pool.worker_count == 4, "the spare was taken and a new one started"
        pool.open("other", module, ECHO_FORMAT, limits, None)
        assert pool.evaluate("other", _batch("z"))[0]["Output"] == "1", "on the old spare"
        _until("the surplus extra to stop", lambda: pool.worker_count == 3)
        assert retired == ["other"]
        assert pool.worker_count == 3, "one spare stays"
    finally:
        for pending in loops:  # each holds its worker until its reply is taken
            with contextlib.suppress(EvaluationError):
                pending.result()
        pool.stop()
