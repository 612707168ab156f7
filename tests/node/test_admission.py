"""The token bucket and the counted gate that bound anonymous work (clock passed in)."""

from __future__ import annotations

import pytest

from appliance.errors import Overloaded, RateLimited
from appliance.node.admission import Gate, TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        bucket.take("things")
    with pytest.raises(RateLimited) as refused:
        bucket.take("things")
    assert refused.value.retry_after == pytest.approx(0.5)
    assert "things are limited to 2 per second (burst 3)" in str(refused.value)
    now[0] += 0.5
    bucket.take("things")
    with pytest.raises(RateLimited):
        bucket.take("things")
    now[0] += 1000
    for _ in range(3):  # refills to the burst, never beyond
        bucket.take("things")
    with pytest.raises(RateLimited):
        bucket.take("things")


def test_gate_refuses_past_capacity_and_frees_on_exit() -> None:
    gate = Gate(2, "dry-runs", retry_after=7.0)
    with gate.held_for(), gate.held_for():
        assert gate.held == 2
        with pytest.raises(Overloaded) as refused, gate.held_for():
            pass
        assert refused.value.retry_after == 7.0
        assert "too many dry-runs at once (limit 2)" in str(refused.value)
    assert gate.held == 0
    with pytest.raises(KeyError, match="inside"), gate.held_for():
        raise KeyError("inside")
    assert gate.held == 0
