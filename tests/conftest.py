"""Suite-wide fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import paths


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The shared real-world vectors directory (skips, or fails in CI, when absent)."""
    return paths.vectors_dir()
