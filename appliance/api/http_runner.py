"""An aiohttp runner whose protocol-level errors are the API's JSON ``{"error": ...}`` too.

aiohttp answers requests it cannot parse (bad request line or method, header or URL too long,
bad chunked encoding, Content-Length with Transfer-Encoding) from its connection handler, before
any route or middleware runs, as ``text/plain``; it offers no public hook for that answer
(aio-libs/aiohttp#3287). ``RequestHandler.handle_error`` is the one method that builds it, so
this module confines the override there: the connection handler aiohttp creates is swapped for
a subclass whose ``handle_error`` keeps aiohttp's logging and connection close and replaces only
the body. If aiohttp's server class ever changes shape, the plain server is kept (and the test
of this module fails).
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web, web_protocol

from appliance.api.http_errors import error_text

log = logging.getLogger("appliance.http")


def error_body(status: int, exc: BaseException | None, message: str | None) -> bytes:
    """The JSON error body for a protocol-level refusal."""
    if status >= 500 or exc is None:
        text = "internal error" if status >= 500 else (message or HTTPStatus(status).phrase)
    else:
        text = error_text(exc, message)
    return json.dumps({"error": text}, ensure_ascii=False, separators=(",", ":")).encode()


class _JsonErrorHandler(web_protocol.RequestHandler):
    def data_received(self, data: bytes) -> None:
        """aiohttp's C parser raises on a bad chunk in the middle of a body and queues the
        error as the next request, leaving the handler reading the body forever: fail that
        body too, so the route answers 400 at once."""
        queued = len(self._messages)
        super().data_received(data)
        request = getattr(self, "_current_request", None)
        if request is None or len(self._messages) <= queued:
            return
        error = self._messages[-1][0]
        if isinstance(error, web_protocol._ErrInfo) and not request.content.is_eof():
            request.content.set_exception(error.exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)
        response = web.Response(status=plain.status, body=error_body(plain.status, exc, message),
                                content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests with JSON errors."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if type(server) is web.Server and hasattr(server, "_kwargs"):
            server.__class__ = _JsonErrorServer
        else:
            log.warning("aiohttp's server class changed; protocol errors stay text/plain")
        return server
