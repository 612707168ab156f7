"""The one place domain errors become HTTP statuses (body: ``{"error": message}``)."""

from __future__ import annotations

import math

from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from appliance.errors import (
    AboveMaximum,
    ApplianceError,
    BadPeerAnswer,
    BadRequest,
    ConfigError,
    EvaluationError,
    ModuleError,
    NotFound,
    NotHosted,
    Overloaded,
    PeerRefused,
    RateLimited,
    RequestTimeout,
    StorageFull,
    TooLarge,
    WrongEncoding,
)

_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (StorageFull, 507),
    (TooLarge, 413),
    (RateLimited, 429),
    (Overloaded, 503),
    (RequestTimeout, 408),
    (NotHosted, 421),
    (PeerRefused, 403),
    (AboveMaximum, 422),
    (WrongEncoding, 422),
    (NotFound, 404),
    (BadRequest, 400),
    (ModuleError, 422),
    (EvaluationError, 503),
    (ConfigError, 500),
    (BadPeerAnswer, 502),
    (HttpProcessingError, 400),  # a body aiohttp could not parse (bad chunk, short body)
    (ConnectionResetError, 400),  # the client went away before sending the whole body
)


def http_status(exc: BaseException) -> int:
    """HTTP status for an error reaching a route handler (500 for anything unexpected)."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def retry_after(exc: BaseException) -> str | None:
    """The ``Retry-After`` header value (whole seconds, at least 1) for a shed request."""
    if isinstance(exc, Overloaded):
        return str(max(1, math.ceil(exc.retry_after)))
    return None


def reason(exc: BaseException) -> str:
    """A label for the rejected-requests metric (no ids, bounded set)."""
    if isinstance(exc, ApplianceError):
        return type(exc).__name__
    return "http" if isinstance(exc, HttpProcessingError | ConnectionResetError) else "internal"


def error_text(exc: BaseException, message: str | None = None) -> str:
    """The ``error`` text for a refusal: a domain error's message; for HTTP that aiohttp could
    not parse, its first line (never the offending bytes, which it appends on later lines)."""
    if isinstance(exc, ApplianceError):
        return str(exc)
    if isinstance(exc, LineTooLong):
        return "bad HTTP request: the request line or a header is too long"
    if isinstance(exc, HttpProcessingError):
        lines = (message or exc.message or "").strip().splitlines()
        return "bad HTTP request: " + (lines[0].rstrip(": ") if lines else "malformed")
    if isinstance(exc, ConnectionResetError):
        return "the connection closed before the whole body arrived"
    return "internal error"
