"""Where the suite finds read-only vectors, the JS reference tools and its download cache.

Anything missing makes the dependent test skip with a clear reason, except when the matching
``AO_APPLIANCE_REQUIRE_*`` variable is set (CI sets them): then it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "tests" / "js"


def _missing(reason: str, require_var: str) -> None:
    if os.environ.get(require_var) == "1":
        pytest.fail(f"{reason} (required because {require_var}=1)")
    pytest.skip(reason)


def vectors_dir() -> Path:
    """The shared real-world vectors (``AO_APPLIANCE_VECTORS`` or ``../shared/vectors``)."""
    path = Path(os.environ.get("AO_APPLIANCE_VECTORS", REPO.parent / "shared" / "vectors"))
    if not path.is_dir():
        _missing(f"real-world vectors not found at {path}", "AO_APPLIANCE_REQUIRE_VECTORS")
    return path


def cache_dir() -> Path:
    """Download cache outside the repo (``AO_APPLIANCE_CACHE`` or ``~/.cache/ao-appliance``)."""
    path = Path(os.environ.get("AO_APPLIANCE_CACHE", Path.home() / ".cache" / "ao-appliance"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def node_modules() -> Path:
    """``tests/js/node_modules`` as installed by ``tests/run.sh`` (``npm ci``)."""
    path = JS_DIR / "node_modules"
    if not (path / "@permaweb" / "ao-loader").is_dir():
        _missing("JS reference tools not installed (run: npm ci --prefix tests/js)",
                 "AO_APPLIANCE_REQUIRE_NODE")
    return path
