"""``python -m bench.crash [--kills N] [--seed S] [--max-minutes M]``: the crash torture of
tests/integration/test_crash.py for N kill -9 rounds (3 processes, 6 concurrent clients,
checkpoints every 5 messages); prints its figures as JSON and exits 1 on any violation."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tests.integration.torture import torture


def main(argv: list[str] | None = None) -> int:
    """Run the torture and print its report."""
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop killing after this long and check what was done")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crash-torture-") as tmp:
        report = torture(Path(tmp), args.kills, seed=args.seed, log=lambda text: print(
            f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True),
            max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    print(json.dumps(asdict(report) | {"processes": len(report.processes)}, indent=2))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
