"""Start the operator gRPC server (grpc.aio) on the listeners the configuration names.

Transports:

* ``listen.grpc`` with ``tls`` configured: mTLS. The server presents ``tls.cert_file`` /
  ``tls.key_file``, requires a client certificate signed by ``tls.ca_file`` and then admits only
  the identities in ``tls.allowed_clients`` (an empty list admits every certificate the CA signed;
  see :mod:`appliance.rpc.auth`).
* ``listen.grpc`` without ``tls``: plaintext, only with ``tls.plaintext_loopback`` on a loopback
  host (the configuration refuses anything else; so does this module).
* ``listen.grpc_unix``: a unix socket without TLS for local administration, mode 0660 (the
  socket's group is who may administer the node). A stale socket left by a dead server is
  replaced; a live one or a non-socket file at that path is an error.

Every listener serves the Operator service, ``grpc.health.v1.Health`` (SERVING once started)
and server reflection, all through one :class:`~appliance.rpc.interceptor.OperatorInterceptor`.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import CollectorRegistry

from appliance.config import AppConfig, TlsSettings, grpc_transport_problem
from appliance.errors import ConfigError
from appliance.network.peers import PeerDirectory
from appliance.network.trust import PeerTrust
from appliance.node.node import Node
from appliance.rpc.auth import AccessPolicy
from appliance.rpc.gen import operator_pb2 as pb
from appliance.rpc.gen import operator_pb2_grpc as pb_grpc
from appliance.rpc.interceptor import OperatorInterceptor
from appliance.rpc.metrics import GrpcServerMetrics
from appliance.rpc.servicer import OperatorService

log = logging.getLogger("appliance.rpc")
OPERATOR_SERVICE = pb.DESCRIPTOR.services_by_name["Operator"].full_name
MESSAGE_SLACK = 64 * 1024
SOCKET_MODE = 0o660


@dataclass(frozen=True)
class GrpcHandle:
    """A running server: where it listens, and how to stop it."""

    server: Any
    service: OperatorService
    health: Any
    metrics: GrpcServerMetrics
    bound_address: str
    addresses: tuple[str, ...]
    unix_socket: Path | None
    socket_inode: tuple[int, int] | None

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, end following streams, stop within ``grace`` seconds."""
        self.service.closing.set()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.unix_socket is not None and self.socket_inode is not None:
            _remove_own_socket(self.unix_socket, self.socket_inode)


def _host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read(path: Path | None, what: str) -> bytes:
    if path is None:
        raise ConfigError(f"tls.{what} is not set")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.{what}: cannot read {path}: {exc.strerror or exc}") from None


def server_credentials(tls: TlsSettings) -> Any:
    """mTLS credentials: our certificate, client certificates required and CA-verified."""
    key, cert = _read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=_read(tls.ca_file,
                                       "ca_file"), require_client_auth=True)


def _clear_stale_socket(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"listen.grpc_unix: {path} exists and is not a socket; not replacing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        else:
            raise ConfigError(f"listen.grpc_unix: {path} is in use by a running server")
    log.info("removing stale socket %s", path)
    path.unlink(missing_ok=True)


def _remove_own_socket(path: Path, inode: tuple[int, int]) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(info.st_mode) and (info.st_dev, info.st_ino) == inode:
        path.unlink(missing_ok=True)


def _bind(server: Any, address: str, credentials: Any | None) -> int:
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc}") from None
    if not port:
        raise ConfigError(f"cannot listen on {address}")
    return int(port)


def _listen(server: Any, config: AppConfig) -> tuple[list[str], Path | None]:
    listen, tls = config.listen, config.tls
    addresses: list[str] = []
    if listen.grpc is not None:
        host, wanted = listen.grpc
        credentials = server_credentials(tls) if tls.enabled else None
        port = _bind(server, _host(host, wanted), credentials)
        addresses.append(_host(host, port))
    unix_path = None if listen.grpc_unix is None else listen.grpc_unix.absolute()
    if unix_path is not None:
        unix_path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        _clear_stale_socket(unix_path)
        _bind(server, f"unix:{unix_path}", None)
        addresses.append(f"unix:{unix_path}")
    return addresses, unix_path


async def start_grpc(node: Node, config: AppConfig, *,
                     registry: CollectorRegistry | None = None,
                     peers: PeerDirectory | None = None,
                     trust: PeerTrust | None = None) -> GrpcHandle:
    """Serve the operator API for ``node`` on ``config.listen.grpc`` / ``grpc_unix`` (with
    ``peers``, a refusal for an item another node schedules names that node).

    Metrics go to ``registry`` (a private one when omitted; one server per registry). Call it
    on the event loop that will run the server.
    """
    listen, tls = config.listen, config.tls
    if listen.grpc is None and listen.grpc_unix is None:
        raise ConfigError("neither listen.grpc nor listen.grpc_unix is configured")
    problem = grpc_transport_problem(config)
    if problem is not None:
        raise ConfigError(problem)
    metrics = GrpcServerMetrics(registry if registry is not None else CollectorRegistry())
    limit = node.settings.max_item_bytes + MESSAGE_SLACK
    server = grpc.aio.server(
        interceptors=[OperatorInterceptor(metrics, AccessPolicy(frozenset(tls.allowed_clients)))],
        options=[("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", -1)])
    service = OperatorService(node, max_result_waiters=config.http.max_result_waiters,
                              peers=peers, trust=trust)
    health_service = health.aio.HealthServicer()
    pb_grpc.add_OperatorServicer_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    reflection.enable_server_reflection(
        (OPERATOR_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        addresses, unix_path = _listen(server, config)
        await server.start()
    except BaseException:
        await server.stop(None)
        raise
    inode = None
    if unix_path is not None:
        os.chmod(unix_path, SOCKET_MODE)
        info = os.lstat(unix_path)
        inode = (info.st_dev, info.st_ino)
    for name in ("", OPERATOR_SERVICE):
        await health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics.preregister([pb.DESCRIPTOR.services_by_name["Operator"],
                         health_pb2.DESCRIPTOR.services_by_name["Health"],
                         reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]])
    log.info("operator gRPC listening on %s", ", ".join(addresses))
    return GrpcHandle(server, service, health_service, metrics, addresses[0], tuple(addresses),
                      unix_path, inode)
