"""Transports and admission: mTLS with an allow-list, the 0660 unix socket, loopback plaintext."""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import grpc
import pytest

from appliance.config import AppConfig, Listeners, TlsSettings
from appliance.errors import ConfigError
from appliance.rpc.auth import certificate_identities, is_local_peer
from appliance.rpc.gen import operator_pb2 as pb
from appliance.rpc.gen import operator_pb2_grpc as pb_grpc
from appliance.rpc.server import start_grpc
from tests.rpc.support import Live, LoopThread, Pki, make_node, serving, tls_config

STATUS = pb.GetStatusRequest()


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    code: grpc.StatusCode = err.value.code()
    return code


@pytest.mark.parametrize("who", ["operator", "robot"])
def test_allow_listed_clients_are_served(live: Live, who: str) -> None:
    cred = getattr(live.pki, who)
    assert live.operator(cred).GetStatus(STATUS, timeout=30).address == \
        live.node.identity.address


def test_client_signed_by_ca_but_not_allowed_is_denied(live: Live) -> None:
    stub = live.operator(live.pki.intruder)
    assert _code(lambda: stub.GetStatus(STATUS, timeout=30)) == \
        grpc.StatusCode.PERMISSION_DENIED


def test_client_from_another_ca_fails_the_handshake(live: Live) -> None:
    stub = live.operator(live.pki.rogue)
    assert _code(lambda: stub.GetStatus(STATUS, timeout=10)) == grpc.StatusCode.UNAVAILABLE


def test_tls_port_refuses_clients_without_certificate_or_tls(live: Live) -> None:
    no_cert = grpc.secure_channel(live.tcp, grpc.ssl_channel_credentials(
        root_certificates=live.pki.ca.read_bytes()))
    assert _code(lambda: pb_grpc.OperatorStub(no_cert).GetStatus(STATUS, timeout=10)) == \
        grpc.StatusCode.UNAVAILABLE
    plain = pb_grpc.OperatorStub(grpc.insecure_channel(live.tcp))
    assert _code(lambda: plain.GetStatus(STATUS, timeout=10)) == grpc.StatusCode.UNAVAILABLE


def test_certificate_identities_cover_cn_and_san(pki: Pki) -> None:
    assert certificate_identities(pki.operator.cert.read_bytes()) == frozenset({"operator-1"})
    assert certificate_identities(pki.robot.cert.read_bytes()) == frozenset(
        {"ci-robot", "spiffe://ao.example/robot"})
    assert "localhost" in certificate_identities(pki.server.cert.read_bytes())
    assert is_local_peer("unix:/run/x.sock") and is_local_peer("ipv4:127.0.0.1:5")
    assert is_local_peer("ipv6:[::1]:5") and not is_local_peer("ipv4:10.0.0.1:5")


def test_empty_allow_list_admits_any_certificate_the_ca_signed(live: Live) -> None:
    with serving(live.node, tls_config(live.pki, None, ())) as (_loop, handle):
        stub = pb_grpc.OperatorStub(grpc.secure_channel(handle.bound_address,
                                                        grpc.ssl_channel_credentials(
            live.pki.ca.read_bytes(), live.pki.intruder.key.read_bytes(),
            live.pki.intruder.cert.read_bytes())))
        assert stub.GetStatus(STATUS, timeout=30).address == live.node.identity.address


def test_unix_socket_is_group_only_and_serves_without_tls(live: Live) -> None:
    info = os.lstat(live.unix)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert live.local().GetStatus(STATUS, timeout=30).address == live.node.identity.address
    assert live.handle.addresses == (live.tcp, f"unix:{live.unix}")


def test_stale_socket_is_replaced_and_removed_on_stop(live: Live, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    config = AppConfig(listen=Listeners(grpc=None, grpc_unix=path))
    with serving(live.node, config) as (_loop, handle):
        assert handle.bound_address == f"unix:{path}"
        stub = pb_grpc.OperatorStub(grpc.insecure_channel(f"unix:{path}"))
        assert stub.GetStatus(STATUS, timeout=30).address == live.node.identity.address
    assert not path.exists()


@pytest.mark.parametrize("kind", ["live-socket", "regular-file"])
def test_unix_path_in_use_is_a_config_error(live: Live, tmp_path: Path, kind: str) -> None:
    if kind == "live-socket":
        path = live.unix
    else:
        path = tmp_path / "not-a-socket"
        path.write_text("keep me")
    loop = LoopThread()
    try:
        with pytest.raises(ConfigError):
            loop.run(start_grpc(live.node, AppConfig(listen=Listeners(grpc=None,
                                                                      grpc_unix=path))))
    finally:
        loop.close()
    assert path.exists()
    if kind == "regular-file":
        assert path.read_text() == "keep me"


def test_plaintext_only_on_loopback_when_enabled(live: Live) -> None:
    plain = AppConfig(listen=Listeners(grpc=("127.0.0.1", 0)),
                      tls=TlsSettings(plaintext_loopback=True))
    with serving(live.node, plain) as (_loop, handle):
        stub = pb_grpc.OperatorStub(grpc.insecure_channel(handle.bound_address))
        assert stub.GetStatus(STATUS, timeout=30).address == live.node.identity.address
    loop = LoopThread()
    try:
        for refused in (AppConfig(listen=Listeners(grpc=("0.0.0.0", 0)),
                                  tls=TlsSettings(plaintext_loopback=True)),
                        AppConfig(listen=Listeners(grpc=("127.0.0.1", 0))),
                        AppConfig(listen=Listeners(grpc=None))):
            with pytest.raises(ConfigError):
                loop.run(start_grpc(live.node, refused))
    finally:
        loop.close()


def test_unexpected_failure_is_internal_without_details(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = make_node(tmp_path)
    node.close()
    sock = tmp_path / "closed.sock"
    with serving(node, AppConfig(listen=Listeners(grpc=None, grpc_unix=sock))) as (_l, _h):
        stub = pb_grpc.OperatorStub(grpc.insecure_channel(f"unix:{sock}"))
        with caplog.at_level(logging.ERROR, logger="appliance.rpc"), \
                pytest.raises(grpc.RpcError) as err:
            stub.GetAttestation(pb.GetAttestationRequest(nonce=b"n"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error; see the node log"
    assert "store is closed" in caplog.text
