"""The checked-in stubs are exactly what ``python -m appliance.rpc.codegen`` writes."""

from __future__ import annotations

from pathlib import Path

from appliance.rpc.codegen import GENERATED, RPC_DIR, generate


def test_regenerated_stubs_equal_the_checked_in_ones(tmp_path: Path) -> None:
    written = generate(tmp_path)
    assert [p.name for p in written] == list(GENERATED)
    for path in written:
        checked_in = RPC_DIR / "gen" / path.name
        assert path.read_bytes() == checked_in.read_bytes(), (
            f"{checked_in} is stale: run python -m appliance.rpc.codegen")
