"""Conformance: our engine's results equal ``@permaweb/ao-loader``'s, case by case.

Goldens were recorded from the pinned reference loader with legacy-CU rollback semantics
(``python -m tests.conformance.generate``). Every field is compared, ``GasUsed`` included
(AO's gas for metered modules, 0 for plain formats, as the loader reports).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.compute import ComputeEngine, ComputeLimits, module_format
from tests.conformance.generate import golden_path
from tests.conformance.reference import run_reference
from tests.conformance.scripts import LOADER_FIXTURES, SCRIPTS, build, cases, env, module_file

CASES = cases()


def _ids(case: tuple[Any, str]) -> str:
    return f"{case[0].name}.{case[1]}"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> ComputeEngine:
    return ComputeEngine(tmp_path_factory.mktemp("cwasm"))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_engine_matches_reference_loader(engine: ComputeEngine, case: tuple[Any, str]) -> None:
    script, module = case
    golden = json.loads(golden_path(script.name, module).read_text(encoding="utf-8"))
    path, fmt = module_file(module)
    loaded = engine.load(path.read_bytes(), module_format(fmt))
    instance = engine.instantiate(loaded, ComputeLimits(gas=script.compute_limit))
    got = [instance.handle(m, env()).as_json() for m in build(script)]
    for index, (mine, theirs) in enumerate(zip(got, golden, strict=True)):
        assert mine == theirs, f"message {index} of {script.name} on {module} differs"


# The loader's own fixtures: small, and between them every format and host-state path (the
# emscripten2 tzset, the clock counter, WeaveDrive's Asyncify round trip, AO gas).
RESTORE_CASES = [case for case in CASES if case[1] in LOADER_FIXTURES]


@pytest.mark.parametrize("case", RESTORE_CASES, ids=_ids)
def test_a_restore_midway_changes_nothing(engine: ComputeEngine, case: tuple[Any, str]) -> None:
    """A process reopened from a snapshot between two messages (a checkpoint restore, an
    eviction) goes on exactly as the uninterrupted run: the loader's results still."""
    script, module = case
    golden = json.loads(golden_path(script.name, module).read_text(encoding="utf-8"))
    path, fmt = module_file(module)
    loaded = engine.load(path.read_bytes(), module_format(fmt))
    limits = ComputeLimits(gas=script.compute_limit)
    messages = build(script)
    half = len(messages) // 2
    first = engine.instantiate(loaded, limits)
    got = [first.handle(m, env()).as_json() for m in messages[:half]]
    snapshot = first.snapshot()
    first.close()
    second = engine.instantiate(loaded, limits, snapshot)
    got += [second.handle(m, env()).as_json() for m in messages[half:]]
    second.close()
    assert got == golden


def test_every_golden_belongs_to_a_case() -> None:
    expected = {golden_path(s.name, m).name for s, m in CASES}
    present = {p.name for p in golden_path("x", "y").parent.glob("*.json")}
    assert present == expected


def test_run_command_prints_the_reference_results(tmp_path: Path) -> None:
    script = next(s for s in SCRIPTS if s.name == "errors_rollback")
    module = "aos2_0_4_32"
    (tmp_path / "env.json").write_text(json.dumps(env()), encoding="utf-8")
    (tmp_path / "msgs.jsonl").write_text(
        "".join(json.dumps(m) + "\n" for m in build(script)), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "run", "--module", str(module_file(module)[0]),
         "--format", module_file(module)[1], "--env", str(tmp_path / "env.json"),
         "--messages", str(tmp_path / "msgs.jsonl")],
        capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    golden = json.loads(golden_path(script.name, module).read_text(encoding="utf-8"))
    assert got == golden


@pytest.mark.slow
def test_goldens_are_what_the_reference_loader_produces() -> None:
    """Re-record four cases with the loader: the committed goldens are its real output."""
    for name, module in (("errors_rollback", "aos2_0_6"), ("handlers", "aos2_0_4_32"),
                         ("loader_small", "emscripten2@emscripten2"),
                         ("gas_cut_off", "emscripten4@metering")):
        script = next(s for s in SCRIPTS if s.name == name)
        golden = json.loads(golden_path(name, module).read_text(encoding="utf-8"))
        assert run_reference(script, module) == golden
