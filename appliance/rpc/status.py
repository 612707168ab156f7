"""The one place domain errors become gRPC status codes (the twin of ``api/http_errors.py``).

``TooLarge`` maps to ``RESOURCE_EXHAUSTED``, the code gRPC itself answers when a message exceeds
the server's receive limit, so an oversized item gets one code whichever check catches it.
"""

from __future__ import annotations

import grpc

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
    RequestTimeout,
    StorageFull,
    TooLarge,
    UsageError,
)

_CODES: tuple[tuple[type[ApplianceError], grpc.StatusCode], ...] = (
    (StorageFull, grpc.StatusCode.UNAVAILABLE),
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Overloaded, grpc.StatusCode.UNAVAILABLE),
    (RequestTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (NotHosted, grpc.StatusCode.FAILED_PRECONDITION),
    (PeerRefused, grpc.StatusCode.PERMISSION_DENIED),
    (AboveMaximum, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModuleError, grpc.StatusCode.FAILED_PRECONDITION),
    (EvaluationError, grpc.StatusCode.FAILED_PRECONDITION),
    (BadPeerAnswer, grpc.StatusCode.UNAVAILABLE),
    (ConfigError, grpc.StatusCode.INTERNAL),
)


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """Status code for an error reaching a handler (``INTERNAL`` for anything unexpected)."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def client_message(exc: BaseException) -> str:
    """The status details sent to the client: the domain message, never a traceback."""
    if isinstance(exc, ApplianceError) and grpc_code(exc) != grpc.StatusCode.INTERNAL:
        return str(exc)
    return "internal error; see the node log"
