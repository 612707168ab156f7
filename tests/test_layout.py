"""House rules that a refactor could silently break."""

from __future__ import annotations

import ast

from tests.support.paths import REPO


def test_attestation_never_imports_appliance() -> None:
    offenders = []
    for path in (REPO / "attestation").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path}:{node.lineno}" for n in names if n.split(".")[0] == "appliance"]
    assert offenders == []
