"""The ``Action: Spawned`` notice a parent gets once its Spawn is scheduled: AO's MU tags, the
spawn's own tags (its ``Reference``) kept, node-signed and the same item when built again."""

from __future__ import annotations

from pathlib import Path

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from appliance.node.messenger import spawned_notice


def test_the_notice_names_the_child_and_keeps_the_spawns_reference(tmp_path: Path) -> None:
    node = NodeIdentity.load_or_create(tmp_path / "node")
    parent = "P" * 43
    spawn = items.sign(node, anchor=b"s" * 32, tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
        ("Module", "M" * 43), ("Name", "kid"), ("Reference", "12"), ("From-Process", parent),
        ("From-Module", "F" * 43), ("Pushed-For", "X" * 43), ("Scheduler", node.address)])
    notice = spawned_notice(node, spawn, parent)
    assert items.parse_verified(notice.raw, 1 << 20).id == notice.id
    assert notice.owner_address == node.address and notice.target == parent
    tags = dict(notice.tags)
    assert [n for n, _ in notice.tags].count("Type") == 1
    assert tags["Type"] == "Message" and tags["Action"] == "Spawned"
    assert tags["Process"] == tags["From-Process"] == spawn.id
    assert tags["Reference"] == "12" and tags["Name"] == "kid" and tags["Module"] == "M" * 43
    assert tags["Data-Protocol"] == "ao" and tags["Variant"] == "ao.TN.1"
    assert "Scheduler" not in tags and "Pushed-For" not in tags
    assert spawned_notice(node, spawn, parent).id == notice.id  # re-derived after a crash
