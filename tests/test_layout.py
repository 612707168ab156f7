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


_CLOCK_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic"}


def _import_time_nodes(tree: ast.Module) -> list[ast.AST]:
    """What runs at import: module and class bodies, decorators and default arguments, not the
    bodies of functions."""
    out: list[ast.AST] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            out += [*stmt.decorator_list, *stmt.args.defaults,
                    *(d for d in stmt.args.kw_defaults if d is not None)]
        elif isinstance(stmt, ast.ClassDef):
            out += stmt.decorator_list
            stack += stmt.body
        else:
            out.append(stmt)
    return out


def test_no_clock_read_at_import_in_tests_or_bench() -> None:
    """A `now` frozen at import makes a test depend on how long the suite has run."""
    offenders = []
    for root in ("tests", "bench"):
        for path in (REPO / root).rglob("*.py"):
            if ".venv" in path.parts or "node_modules" in path.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for top in _import_time_nodes(tree):
                for node in ast.walk(top):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr in _CLOCK_CALLS):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
