"""gRPC server metrics named as go-grpc-prometheus names them, so its dashboards work as they are.

``grpc_type`` is ``unary``, ``client_stream``, ``server_stream`` or ``bidi_stream``; ``grpc_code``
is the Go spelling of the status code (``OK``, ``NotFound``, ``Canceled``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import CollectorRegistry, Counter, Histogram

_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def go_code_name(code: grpc.StatusCode) -> str:
    """``grpc.StatusCode.NOT_FOUND`` → ``NotFound`` (Go's ``codes.Code.String()``)."""
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    if code == grpc.StatusCode.OK:
        return "OK"
    return "".join(part.capitalize() for part in code.name.split("_"))


def rpc_type(request_streaming: bool, response_streaming: bool) -> str:
    """The ``grpc_type`` label for a method's streaming shape."""
    if request_streaming and response_streaming:
        return "bidi_stream"
    if request_streaming:
        return "client_stream"
    return "server_stream" if response_streaming else "unary"


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


@dataclass(frozen=True)
class MethodLabels:
    """The three labels that identify one method in every metric."""

    grpc_type: str
    grpc_service: str
    grpc_method: str


class GrpcServerMetrics:
    """The five go-grpc-prometheus server metrics, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter("grpc_server_started", "Total number of RPCs started on the "
                               "server.", _LABELS, registry=registry)
        self.handled = Counter("grpc_server_handled", "Total number of RPCs completed on the "
                               "server, regardless of success or failure.",
                               (*_LABELS, "grpc_code"), registry=registry)
        self.received = Counter("grpc_server_msg_received", "Total number of RPC stream "
                                "messages received on the server.", _LABELS, registry=registry)
        self.sent = Counter("grpc_server_msg_sent", "Total number of gRPC stream messages sent "
                            "by the server.", _LABELS, registry=registry)
        self.seconds = Histogram("grpc_server_handling_seconds", "Histogram of response latency "
                                 "(seconds) of gRPC that had been application-level handled by "
                                 "the server.", _LABELS, registry=registry)

    def preregister(self, services: Iterable[ServiceDescriptor]) -> None:
        """Create every series of ``services`` at zero, as go-grpc-prometheus does on start."""
        for service in services:
            for method in service.methods:
                labels = MethodLabels(rpc_type(method.client_streaming, method.server_streaming),
                                      service.full_name, method.name)
                values = (labels.grpc_type, labels.grpc_service, labels.grpc_method)
                self.started.labels(*values)
                self.received.labels(*values)
                self.sent.labels(*values)
                self.seconds.labels(*values)
                for code in grpc.StatusCode:
                    self.handled.labels(*values, go_code_name(code))

    def on_start(self, labels: MethodLabels) -> None:
        """Count a started RPC."""
        self.started.labels(labels.grpc_type, labels.grpc_service, labels.grpc_method).inc()

    def on_received(self, labels: MethodLabels) -> None:
        """Count one request message."""
        self.received.labels(labels.grpc_type, labels.grpc_service, labels.grpc_method).inc()

    def on_sent(self, labels: MethodLabels) -> None:
        """Count one response message."""
        self.sent.labels(labels.grpc_type, labels.grpc_service, labels.grpc_method).inc()

    def on_handled(self, labels: MethodLabels, code: grpc.StatusCode, seconds: float) -> None:
        """Count a finished RPC with its status code and record its latency."""
        values = (labels.grpc_type, labels.grpc_service, labels.grpc_method)
        self.handled.labels(*values, go_code_name(code)).inc()
        self.seconds.labels(*values).observe(seconds)
