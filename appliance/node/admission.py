"""Admission control for work anonymous clients can ask for: a token bucket and a counted gate.

Both decide from plain state and a clock passed in (``time.monotonic`` by default), and refuse
with :class:`~appliance.errors.Overloaded` (or :class:`~appliance.errors.RateLimited`) carrying
the seconds after which a retry can succeed. Both are thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from appliance.errors import Overloaded, RateLimited


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each admitted call takes one."""

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, what: str) -> None:
        """Take a token, or raise :class:`RateLimited` naming ``what`` and the rate."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            wait = (1.0 - self._tokens) / self.rate
        raise RateLimited(f"{what} are limited to {self.rate:g} per second (burst "
                          f"{self.burst}); retry in {wait:.1f} s", retry_after=wait)


class Gate:
    """At most ``capacity`` holders at once; one more is refused, never queued."""

    def __init__(self, capacity: int, what: str, retry_after: float = 1.0) -> None:
        self.capacity, self.what, self.retry_after = capacity, what, retry_after
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """How many holders are inside now."""
        return self._held

    def acquire(self) -> None:
        """Enter, or raise :class:`Overloaded` when ``capacity`` holders are inside."""
        with self._lock:
            if self._held >= self.capacity:
                raise Overloaded(f"too many {self.what} at once (limit {self.capacity}); "
                                 f"retry later", retry_after=self.retry_after)
            self._held += 1

    def release(self) -> None:
        """Leave (once per successful :meth:`acquire`)."""
        with self._lock:
            self._held -= 1

    @contextmanager
    def held_for(self) -> Iterator[None]:
        """``with gate.held_for():`` -- acquire, run, release."""
        self.acquire()
        try:
            yield
        finally:
            self.release()
