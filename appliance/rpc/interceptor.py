"""The server's one interceptor: admit the caller, count the call, turn errors into statuses.

Every method of every service (Operator, health, reflection) passes through it. Admission is the
allow-list check of :mod:`appliance.rpc.auth` (refused: ``PERMISSION_DENIED``); errors map
through :func:`appliance.rpc.status.grpc_code`; an unexpected error is logged here with its
traceback and leaves as ``INTERNAL`` with a fixed message.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc

from appliance.rpc.auth import AccessPolicy
from appliance.rpc.metrics import GrpcServerMetrics, MethodLabels, rpc_type, split_method
from appliance.rpc.status import client_message, grpc_code

log = logging.getLogger("appliance.rpc")
Behavior = Callable[..., Any]


class _Call:
    """One RPC seen by the interceptor, as an async context around the handler body."""

    def __init__(self, owner: OperatorInterceptor, labels: MethodLabels, context: Any) -> None:
        self.owner = owner
        self.labels = labels
        self.context = context
        self.started = 0.0

    def _handled(self, code: grpc.StatusCode) -> None:
        self.owner.metrics.on_handled(self.labels, code, time.perf_counter() - self.started)

    async def __aenter__(self) -> _Call:
        self.owner.metrics.on_start(self.labels)
        self.started = time.perf_counter()
        refusal = self.owner.policy.refusal(self.context.auth_context(), self.context.peer())
        if refusal is not None:
            self._handled(grpc.StatusCode.PERMISSION_DENIED)
            log.warning("refused %s from %s: %s", self.labels.grpc_method, self.context.peer(),
                        refusal)
            await self.context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        _tb: TracebackType | None) -> bool:
        if exc is None:
            self._handled(grpc.StatusCode.OK)
            return False
        if isinstance(exc, grpc.aio.AbortError):
            self._handled(self.context.code() or grpc.StatusCode.UNKNOWN)
            return False
        if not isinstance(exc, Exception):
            self._handled(grpc.StatusCode.CANCELLED)
            return False
        code = grpc_code(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s/%s failed", self.labels.grpc_service, self.labels.grpc_method,
                      exc_info=(kind or type(exc), exc, exc.__traceback__))
        self._handled(code)
        await self.context.abort(code, client_message(exc))
        return False


class OperatorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each method handler with admission, metrics and error mapping."""

    def __init__(self, metrics: GrpcServerMetrics, policy: AccessPolicy) -> None:
        self.metrics = metrics
        self.policy = policy

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        """Return the wrapped handler for ``details.method`` (None when it is unknown)."""
        handler = await continuation(details)
        if handler is None:
            return None
        service, method = split_method(details.method)
        labels = MethodLabels(rpc_type(handler.request_streaming, handler.response_streaming),
                              service, method)
        codecs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(handler.stream_stream, labels, True), **codecs)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, labels, True), **codecs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, labels, False), **codecs)
        return grpc.unary_unary_rpc_method_handler(
            self._unary(handler.unary_unary, labels, False), **codecs)

    async def _counted(self, requests: AsyncIterator[Any],
                       labels: MethodLabels) -> AsyncIterator[Any]:
        async for request in requests:
            self.metrics.on_received(labels)
            yield request

    def _input(self, request: Any, labels: MethodLabels, streaming: bool) -> Any:
        if streaming:
            return self._counted(request, labels)
        self.metrics.on_received(labels)
        return request

    def _unary(self, behavior: Behavior, labels: MethodLabels, streaming: bool) -> Behavior:
        async def call(request: Any, context: Any) -> Any:
            given = self._input(request, labels, streaming)
            async with _Call(self, labels, context):
                response = await behavior(given, context)
                self.metrics.on_sent(labels)
                return response

        return call

    def _streaming(self, behavior: Behavior, labels: MethodLabels, streaming: bool) -> Behavior:
        if not inspect.isasyncgenfunction(behavior):
            async def writes(request: Any, context: Any) -> None:
                given = self._input(request, labels, streaming)
                async with _Call(self, labels, context):
                    await behavior(given, context)

            return writes

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            given = self._input(request, labels, streaming)
            async with _Call(self, labels, context):
                async for response in behavior(given, context):
                    self.metrics.on_sent(labels)
                    yield response

        return stream


__all__ = ["OperatorInterceptor"]
