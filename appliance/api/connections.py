"""Connection limits of the AO HTTP listener: a cap on open connections and a request-head timeout.

aiohttp closes idle keep-alive connections (``keepalive_timeout``) but has no header timeout: a
client dribbling one header byte at a time holds its connection as long as it likes, and nothing
caps how many it opens. :class:`ConnectionGuard` sits between the listening socket and aiohttp's
protocol (a forwarding :class:`asyncio.Protocol`, aiohttp's own protocol unchanged behind it):

- past ``max_connections`` open connections a new one is answered 503 and closed;
- a request head must be complete ``header_timeout_seconds`` after its first byte, else the
  connection is answered 408 and closed. The route middleware tells the guard when a head is
  complete (:meth:`ConnectionGuard.request_started`) and when its answer is ready
  (:meth:`ConnectionGuard.request_finished`); between requests aiohttp's idle timeout applies.

Body timeouts are applied where bodies are read (``appliance.api.http``).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web


class HttpObserver:
    """What the HTTP front-end reports for metrics; every hook does nothing here."""

    def connection_opened(self) -> None:
        """A connection was admitted."""

    def connection_closed(self, reason: str | None) -> None:
        """A connection ended; ``reason`` is ``header_timeout``, ``body_timeout`` or ``cap``
        when the node closed it for that reason, None otherwise (``cap``: never admitted)."""

    def result_waiters(self, delta: int) -> None:
        """The number of result reads waiting for an evaluation changed by ``delta``."""


LINGER_SECONDS = 2.0
"""After a refusal, how long the node reads (and drops) what the client still sends before it
closes: closing with unread input makes the kernel send a reset, which can destroy the answer."""


def _refuse(transport: asyncio.Transport, answer: bytes) -> None:
    """Send ``answer``, end the write side, and close after :data:`LINGER_SECONDS`."""
    transport.write(answer)
    if transport.can_write_eof():
        transport.write_eof()
    asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)


def _answer(status: int, reason: str, error: str) -> bytes:
    body = json.dumps({"error": error}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            + ("Retry-After: 1\r\n" if status == 503 else "") + "\r\n").encode() + body


class _Guarded(asyncio.Protocol):
    """One connection: forwards every event to aiohttp's protocol, and times the request head."""

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], Any]) -> None:
        self._guard, self._make_inner = guard, inner
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._closed_for: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        guard = self._guard
        if guard.open >= guard.max_connections:
            self._closed_for = "cap"
            _refuse(transport, _answer(
                503, "Service Unavailable",
                f"too many open connections (limit {guard.max_connections}); retry later"))
            guard.observer.connection_closed("cap")
            return
        guard.admit(transport, self)
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._inner is None:
            return
        self._guard.release(self._transport)
        self._guard.observer.connection_closed(self._closed_for)
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._closed_for == "header_timeout":
            return  # refused: what the client still sends is dropped until the close
        if not self._in_request and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self._guard.header_timeout, self._head_timed_out)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return None
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def started(self) -> None:
        self._in_request = True
        self._cancel_timer()

    def finished(self) -> None:
        self._in_request = False

    def close_for(self, reason: str) -> None:
        """Mark the connection as closed by the node for ``reason`` (counted when it ends)."""
        self._closed_for = reason

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._in_request or self._transport is None or self._transport.is_closing():
            return
        self._closed_for = "header_timeout"
        _refuse(self._transport, _answer(
            408, "Request Timeout",
            f"the request head did not arrive within {self._guard.header_timeout:g} s"))


class ConnectionGuard:
    """Caps and times the connections of one listener (see the module docstring)."""

    def __init__(self, max_connections: int, header_timeout: float,
                 observer: HttpObserver | None = None) -> None:
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self.observer = observer or HttpObserver()
        self._open: dict[asyncio.BaseTransport, _Guarded] = {}

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._open)

    def admit(self, transport: asyncio.BaseTransport, conn: _Guarded) -> None:
        """Count ``conn`` as open."""
        self._open[transport] = conn
        self.observer.connection_opened()

    def release(self, transport: asyncio.BaseTransport | None) -> None:
        """Forget a closed connection."""
        if transport is not None:
            self._open.pop(transport, None)

    def protocol_factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` wrapping aiohttp's ``inner`` one."""
        return lambda: _Guarded(self, inner)

    def _conn(self, request: web.BaseRequest) -> _Guarded | None:
        transport = request.transport
        return None if transport is None else self._open.get(transport)

    def request_started(self, request: web.BaseRequest) -> None:
        """The head of ``request`` is complete: stop its head timer."""
        conn = self._conn(request)
        if conn is not None:
            conn.started()

    def request_finished(self, request: web.BaseRequest) -> None:
        """``request`` is answered: the connection is between requests again."""
        conn = self._conn(request)
        if conn is not None:
            conn.finished()

    def closing(self, request: web.BaseRequest, reason: str) -> None:
        """The node closes ``request``'s connection for ``reason`` (say, ``body_timeout``)."""
        conn = self._conn(request)
        if conn is not None:
            conn.close_for(reason)


class GuardedSite(web.BaseSite):
    """A site on a listening socket whose connections pass through a :class:`ConnectionGuard`.

    The socket is bound by the caller, so ``serve`` can refuse a taken port before it creates
    anything on disk."""

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard,
                 sock: socket.socket) -> None:
        super().__init__(runner)
        self._guard, self._sock = guard, sock

    @property
    def name(self) -> str:
        """The site's URL."""
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        """Accept connections on the socket."""
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), sock=self._sock, backlog=self._backlog)
