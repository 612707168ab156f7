"""``python -m bench [--quick] [--out FILE] [--only SECTION ...]``: run the benchmarks, print a
table of figures with their anchors and ratios, and write everything as JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    aos_throughput,
    ceiling,
    cold_start,
    engine_latency,
    http_pipeline,
    isolation,
    scaling,
    shards,
    verification,
    xpush,
)

SECTIONS = {"engine": engine_latency.run, "aos": aos_throughput.run, "http": http_pipeline.run,
            "ceiling": ceiling.run, "shards": shards.run,
            "cold_start": cold_start.run, "verification": verification.run,
            "scaling": scaling.run, "isolation": isolation.run, "xpush": xpush.run}


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _table(results: dict[str, Any]) -> str:
    lines = []
    for section, value in results.items():
        if section == "machine":
            continue
        lines.append(f"== {section}")
        rows = value if isinstance(value, list) else [value]
        for row in rows:
            lines.append("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections (all by default)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args(argv)
    cache = Path(os.environ.get("AO_APPLIANCE_CACHE", Path.home() / ".cache" / "ao-appliance"))
    cache = cache / "bench-modules"
    results: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                           "cpus": os.cpu_count(), "quick": args.quick}}
    for name in args.only:
        started = time.perf_counter()
        results[name] = SECTIONS[name](args.quick, cache, _log)
        _log(f"{name} done in {time.perf_counter() - started:.1f} s")
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(_table(results))
    _log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
