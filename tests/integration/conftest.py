"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.server import Server


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Real ``serve`` processes a test started (append them); stopped when it ends."""
    running: list[Server] = []
    yield running
    for srv in running:
        srv.stop()
