"""The one place domain errors become HTTP statuses (body: ``{"error": message}``)."""

from __future__ import annotations

from appliance.errors import (
    ApplianceError,
    BadRequest,
    ConfigError,
    EvaluationError,
    ModuleError,
    NotFound,
    NotHosted,
    TooLarge,
)

_STATUS: tuple[tuple[type[ApplianceError], int], ...] = (
    (TooLarge, 413),
    (NotHosted, 421),
    (NotFound, 404),
    (BadRequest, 400),
    (ModuleError, 422),
    (EvaluationError, 503),
    (ConfigError, 500),
)


def http_status(exc: BaseException) -> int:
    """HTTP status for an error reaching a route handler (500 for anything unexpected)."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def reason(exc: BaseException) -> str:
    """A label for the rejected-requests metric (no ids, bounded set)."""
    return type(exc).__name__ if isinstance(exc, ApplianceError) else "internal"
