"""The single error tree of the ``appliance`` package.

Every error a caller can act on derives from :class:`ApplianceError`. Mappings to exit codes,
HTTP statuses and gRPC codes each live in one place (``appliance.cli.exitcodes`` and the API
packages) and key on these classes.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every domain error raised by the node."""


class UsageError(ApplianceError):
    """The caller passed bad arguments or unreadable input files."""


class ConfigError(ApplianceError):
    """A configuration file or value is invalid."""


class ModuleError(ApplianceError):
    """A wasm module cannot be loaded: unreadable, invalid, unknown format or missing imports."""


class EvaluationError(ApplianceError):
    """Evaluating one message failed; the message's result carries the error, memory rolls back."""


class LimitExceeded(EvaluationError):
    """A per-message limit (compute, memory, wall clock, output size) was exceeded."""


class StorageFull(ApplianceError):
    """The node's disk (its data dir) is full: the write was not made. Reads go on, and writes
    resume by themselves once there is space again. Mapped to HTTP 507."""


class RequestError(ApplianceError):
    """A client request the node refuses; nothing was stored. Mapped to 4xx / gRPC codes."""


class BadRequest(RequestError):
    """The request or item is malformed, unsigned, forged or violates AO's rules."""


class NotFound(RequestError):
    """The process, message or result asked for does not exist on this node."""


class TooLarge(RequestError):
    """The request exceeds a configured size limit."""


class AboveMaximum(RequestError):
    """A module or process asks (``Memory-Limit``, ``Compute-Limit``) for more than the node's
    configured maximum; the operator's limits are caps, never raised by tags."""


class WrongEncoding(RequestError):
    """The request is in an encoding the node does not take (an httpsig-signed AO-Core
    request); the client should resend it as an ANS-104 item."""


class NotHosted(RequestError):
    """The process is scheduled by another node (its ``Scheduler`` tag names someone else)."""


class PeerRefused(RequestError):
    """A pushed item (``From-Process``, owner another node) whose sender is not a trusted peer
    (unknown, emulated, failing the peer policy); nothing was stored. Mapped to HTTP 403."""


class Overloaded(RequestError):
    """A bounded resource (waiters, dry-runs, connections) is full; retry after ``retry_after``
    seconds. Nothing was done for the request."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[Overloaded], tuple[str, float]]:
        return type(self), (str(self), self.retry_after)


class ShardUnavailable(Overloaded):
    """The shard process owning the process asked about is not running (it is being
    restarted); retry after ``retry_after`` seconds. Nothing was done for the request."""


class RateLimited(Overloaded):
    """A client-facing rate limit (token bucket) refused the request; retry after
    ``retry_after`` seconds."""


class PeerUnavailable(Overloaded):
    """The node hosting the process (a peer) did not answer in time or is down. For a forwarded
    item: it is queued durably and retried in the background; the same item posted again gets
    the peer's receipt once it acknowledged it. Mapped to HTTP 503 with ``Retry-After``."""


class ForwardRefused(BadRequest):
    """The peer hosting the process refused the item forwarded to it (its answer is quoted);
    it is not retried."""


class BadPeerAnswer(ApplianceError):
    """A peer answered with something this node will not believe (a module whose signature, id
    or type does not check out, an answer over the size bound). Mapped to HTTP 502."""


class RequestTimeout(RequestError):
    """The client did not send its request (head or body) within the configured time."""
