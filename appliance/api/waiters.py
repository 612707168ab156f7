"""Result reads waiting for an evaluation, as futures on the event loop (no thread each).

The node calls :meth:`ResultWaiters.progress` from its actor threads when results are stored
(see :meth:`~appliance.node.node.Node.add_progress_listener`); the waiting readers of that process
whose slot is now stored are woken on the loop and read the store again. At most ``capacity``
readers wait at once; one more is refused with :class:`~appliance.errors.Overloaded`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from appliance.api.connections import HttpObserver
from appliance.errors import NotFound, Overloaded
from appliance.node.node import Node


class ResultWaiters:
    """Futures of waiting result reads, keyed by process and slot."""

    def __init__(self, capacity: int, observer: HttpObserver | None = None) -> None:
        self.capacity = capacity
        self._observer = observer or HttpObserver()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._count = 0

    @property
    def count(self) -> int:
        """Readers waiting now."""
        return self._count

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the futures live on (the one serving HTTP)."""
        self._loop = loop

    def progress(self, process_id: str, slot: int) -> None:
        """Results of ``process_id`` up to ``slot`` are stored (any thread)."""
        loop = self._loop
        if loop is not None and process_id in self._waiting and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, process_id, slot)

    def _wake(self, process_id: str, slot: int) -> None:
        entries = self._waiting.get(process_id)
        if not entries:
            return
        keep = []
        for wanted, future in entries:
            if wanted <= slot:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((wanted, future))
        if keep:
            self._waiting[process_id] = keep
        else:
            del self._waiting[process_id]

    def enter(self) -> None:
        """Count one more waiting reader, or raise Overloaded at ``capacity``."""
        if self._count >= self.capacity:
            raise Overloaded(f"too many clients are waiting for results (limit "
                             f"{self.capacity}); retry later")
        self._count += 1
        self._observer.result_waiters(1)

    def leave(self) -> None:
        """One reader stopped waiting."""
        self._count -= 1
        self._observer.result_waiters(-1)

    def future(self, process_id: str, slot: int) -> asyncio.Future[None]:
        """A future set once ``process_id`` has a result at ``slot`` (or stops evaluating)."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(process_id, []).append((slot, future))
        return future

    def forget(self, process_id: str, future: asyncio.Future[None]) -> None:
        """Drop ``future`` (its reader gave up)."""
        entries = self._waiting.get(process_id)
        if entries is None:
            return
        entries[:] = [(s, f) for s, f in entries if f is not future]
        if not entries:
            del self._waiting[process_id]


async def await_result(node: Node, waiters: ResultWaiters, process_id: str,
                       message_id: str) -> dict[str, Any]:
    """The result of ``message_id``, waiting up to the node's ``result_wait_seconds`` on the
    event loop (a future the node's progress wakes), holding no thread while it waits (nor
    while it reads, when a shard process holds the result).

    ``waiters`` must be a progress listener of ``node``. NotFound when the result is still not
    computed at the deadline; Overloaded when ``waiters`` is full.
    """
    def now() -> Awaitable[tuple[int, dict[str, Any] | None]]:
        future = node.submit_result_now(process_id, message_id)
        if future is None:  # a shard in this process: its store read blocks
            return asyncio.to_thread(node.result_now, process_id, message_id)
        return asyncio.wrap_future(future)

    _, value = await now()
    if value is not None:
        return value
    loop = asyncio.get_running_loop()
    wait = node.settings.result_wait_seconds
    deadline = loop.time() + wait
    if wait > 0:
        waiters.enter()
        try:
            while (remaining := deadline - loop.time()) > 0:
                slot, value = await now()
                if value is not None:
                    return value
                woken = waiters.future(process_id, slot)
                try:
                    # read again now that the future is registered: a result stored between
                    # the read above and the registration would wake nobody
                    _, value = await now()
                    if value is not None:
                        return value
                    await asyncio.wait_for(woken, remaining)
                except TimeoutError:
                    break
                finally:
                    waiters.forget(process_id, woken)
        finally:
            waiters.leave()
    raise NotFound(f"result for {message_id} is not computed yet")
