"""Tag search (GraphQL's tag filters): what is indexed, and databases from before ``item_tags``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance.ao import items
from appliance.node.db.schema import DB_FILE
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from tests.node.test_node_core import _eval, _module, _node, _process

OLD_TAGS = """
CREATE TABLE tags (
    item_id TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (item_id, position));
CREATE INDEX tags_by_name_value ON tags (name, value);
"""


def _ids(node: Node, *tags: tuple[str, str]) -> set[str]:
    found = node.find_items(tags=[(name, [value], False) for name, value in tags], limit=100)
    return {items.parse_unverified(raw).id for _row, raw in found}


def _spawn_and_eval(node: Node, client: NodeIdentity) -> tuple[items.Item, items.Item]:
    module = _module(client)
    node.ingest(module.raw)
    proc = _process(client, module.id, node.identity.address, "tagged")
    node.ingest(proc.raw)
    msg = _eval(client, proc.id, "return 1", 1)
    node.ingest(msg.raw)
    node.result(proc.id, msg.id)
    return proc, msg


def test_client_items_are_found_by_every_tag_node_items_by_id(tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    node = _node(tmp_path / "node")
    try:
        proc, msg = _spawn_and_eval(node, client)
        assert _ids(node, ("Name", "tagged"), ("Type", "Process")) == {proc.id}
        assert _ids(node, ("Action", "Eval")) == {msg.id}
        result = items.parse_unverified(node.result_item(proc.id, msg.id))
        _, assignment = node.scheduled(proc.id, msg.id)
        assert _ids(node, ("Type", "Result")) == set(), "node items have no tag rows"
        assert _ids(node, ("Type", "Assignment")) == set()
        both = [result.id, assignment.id, msg.id]
        found = node.find_items(ids=both, limit=10)
        assert [items.parse_unverified(raw).id for _, raw in found] == [result.id, assignment.id,
                                                                         msg.id]
        assert [r for r, _ in found] == sorted((r for r, _ in found), reverse=True)
        page = node.find_items(ids=both, after_row=found[0][0], limit=1)
        assert [items.parse_unverified(raw).id for _, raw in page] == [assignment.id]
        oldest = node.find_items(ids=both, ascending=True, limit=1)
        assert [items.parse_unverified(raw).id for _, raw in oldest] == [msg.id]

        def by_id(**filters: object) -> set[str]:
            rows = node.find_items(ids=both, limit=10, **filters)  # type: ignore[arg-type]
            return {items.parse_unverified(raw).id for _, raw in rows}

        assert by_id(tags=[("Type", ["Result"], False)]) == {result.id}
        assert by_id(tags=[("Type", ["Result"], True)]) == {assignment.id, msg.id}
        assert by_id(tags=[("Process", [proc.id], False)]) == {result.id, assignment.id}
        hash_chain = items.first_tag(result, "Hash-Chain") or ""
        assert by_id(tags=[("Hash-Chain", [hash_chain], False)]) == set(), "as before: unindexed"
        assert by_id(owners=[node.identity.address]) == {result.id, assignment.id}
        assert by_id(recipients=[proc.id]) == {result.id, msg.id}
        assert node.item_raw(result.id) == result.raw
        assert node.item_raw(assignment.id) == assignment.raw
        assert node.home.store.one("SELECT count(*) FROM items WHERE kind IN "
                                   "('assignment', 'result')")[0] == 0
    finally:
        node.close()


def test_a_database_with_the_old_tags_table_is_migrated(tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    data = tmp_path / "node"
    node = _node(data)
    try:
        proc, msg = _spawn_and_eval(node, client)
    finally:
        node.close()
    conn = sqlite3.connect(data / DB_FILE, isolation_level=None)
    conn.executescript(OLD_TAGS)
    conn.execute("INSERT INTO tags SELECT items.id, t.position, t.name, t.value "
                 "FROM item_tags t JOIN items ON items.rowid = t.item_row")
    conn.execute("DELETE FROM item_tags")
    conn.close()
    node = _node(data)
    try:
        assert _ids(node, ("Name", "tagged")) == {proc.id}
        assert _ids(node, ("Action", "Eval")) == {msg.id}
        assert node.home.store.one("SELECT 1 FROM sqlite_master WHERE name = 'tags'") is None
    finally:
        node.close()
