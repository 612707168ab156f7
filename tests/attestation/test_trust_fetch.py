"""Collateral sources against a real HTTP server on loopback serving the shared vectors."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from attestation import trust_fetch as tf
from attestation.errors import CollateralError
from attestation.snp.report import parse_report
from attestation.snp.tcb import decode_tcb

FMSPC = bytes.fromhex("50806f000000")


@dataclass
class Server:
    """A loopback KDS/PCS: path+query → (body, headers); records every request it answers."""

    routes: dict[str, tuple[bytes, dict[str, str]]]
    hits: list[str] = field(default_factory=list)
    url: str = ""


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.hits.append(self.path)
            if self.path == "/slow":
                time.sleep(1.5)
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            body, headers = route
            try:
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout test)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def snp_request(vectors: Path) -> tf.Request:
    report = parse_report((vectors / "sev-snp" / "attestation.bin").read_bytes())
    return tf.snp_vcek("Milan", report.chip_id, decode_tcb(report.reported_tcb, "Milan"))


@pytest.fixture
def server(vectors: Path, snp_request: tf.Request) -> Iterator[Server]:
    snp, tdx = vectors / "sev-snp", vectors / "tdx"

    def chain(name: str) -> str:
        return urllib.parse.quote((tdx / name).read_text())

    routes = {
        snp_request.path: ((snp / "vcek.testcer").read_bytes(), {}),
        "/vcek/v1/Milan/cert_chain": ((snp / "milan.testcer").read_bytes(), {}),
        "/vlek/v1/Milan/cert_chain": ((snp / "milanvlek.testcer").read_bytes(), {}),
        "/tdx/certification/v4/tcb?fmspc=50806f000000": (
            (tdx / "sample_tcbInfo_response").read_bytes(),
            {"TCB-Info-Issuer-Chain": chain("tcb-info-issuer-chain.pem")}),
        "/tdx/certification/v4/qe/identity": (
            (tdx / "sample_qeIdentity_response").read_bytes(),
            {"SGX-Enclave-Identity-Issuer-Chain": chain("qe-identity-issuer-chain.pem")}),
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der": (
            (tdx / "pckcrl").read_bytes(),
            {"SGX-PCK-CRL-Issuer-Chain": chain("pck-crl-issuer-chain.pem")}),
        "/IntelSGXRootCA.der": ((tdx / "rootcrl.der").read_bytes(), {}),
        "/slow": (b"late", {}),
    }
    state = Server(routes)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _source(server: Server, **limits: float) -> tf.KdsPcsSource:
    return tf.KdsPcsSource(base_url_amd=server.url, base_url_intel=server.url,
                           root_crl_url=f"{server.url}/IntelSGXRootCA.der",
                           limits=tf.FetchLimits(**limits))  # type: ignore[arg-type]


def test_kds_pcs_source_fetches_every_kind(server: Server, vectors: Path,
                                           snp_request: tf.Request) -> None:
    client = tf.CollateralClient(_source(server))
    report = parse_report((vectors / "sev-snp" / "attestation.bin").read_bytes())
    tcb = decode_tcb(report.reported_tcb, "Milan")
    assert client.snp_vcek("Milan", report.chip_id, tcb) == \
        (vectors / "sev-snp" / "vcek.testcer").read_bytes()
    assert "blSPL=" in snp_request.path and "ucodeSPL=" in snp_request.path
    assert client.snp_cert_chain("Milan", "vlek") == \
        (vectors / "sev-snp" / "milanvlek.testcer").read_bytes()
    tcb_info = client.tdx_tcb_info(FMSPC)
    assert tcb_info.body == (vectors / "tdx" / "sample_tcbInfo_response").read_bytes()
    assert tcb_info.issuer_chain == (vectors / "tdx" / "tcb-info-issuer-chain.pem").read_bytes()
    qe = client.tdx_qe_identity()
    assert qe.issuer_chain == (vectors / "tdx" / "qe-identity-issuer-chain.pem").read_bytes()
    crl = client.tdx_pck_crl("platform")
    assert crl.body == (vectors / "tdx" / "pckcrl").read_bytes()
    assert crl.issuer_chain == (vectors / "tdx" / "pck-crl-issuer-chain.pem").read_bytes()
    assert client.root_crl() == (vectors / "tdx" / "rootcrl.der").read_bytes()


def test_cache_answers_second_time_and_offline(server: Server, tmp_path: Path) -> None:
    cache = tf.CachingSource(_source(server), tmp_path / "cache")
    first = cache.fetch(tf.tdx_tcb_info(FMSPC))
    cache.fetch(tf.snp_cert_chain("Milan"))
    hits = len(server.hits)
    assert cache.fetch(tf.tdx_tcb_info(FMSPC)) == first
    assert len(server.hits) == hits
    offline = tf.CachingSource(None, tmp_path / "cache", offline=True)
    assert offline.fetch(tf.tdx_tcb_info(FMSPC)) == first
    assert tf.DirectorySource(tmp_path / "cache").fetch(tf.tdx_tcb_info(FMSPC)) == first
    with pytest.raises(CollateralError, match=r"offline: the TDX QE identity is not in the cache "
                                              r"\(expected .*intel/tdx/qe-identity\.json\)"):
        offline.fetch(tf.tdx_qe_identity())
    assert len(server.hits) == hits
    stale = tf.CachingSource(_source(server), tmp_path / "cache", max_age=-1)
    assert stale.fetch(tf.tdx_tcb_info(FMSPC)) == first
    assert len(server.hits) == hits + 1


def test_directory_source_names_what_is_missing(tmp_path: Path) -> None:
    source = tf.DirectorySource(tmp_path)
    with pytest.raises(CollateralError, match=r"TDX TCB info for FMSPC 50806f000000 is missing"):
        source.fetch(tf.tdx_tcb_info(FMSPC))
    (tmp_path / "intel" / "tdx" / "tcb-info").mkdir(parents=True)
    (tmp_path / "intel" / "tdx" / "tcb-info" / "50806f000000.json").write_text("{}")
    with pytest.raises(CollateralError, match=r"issuer chain .* missing.*issuer-chain\.pem"):
        source.fetch(tf.tdx_tcb_info(FMSPC))


def test_404_oversize_timeout_and_bad_requests(server: Server) -> None:
    with pytest.raises(CollateralError, match=r"FMSPC 00906ea10000: .* HTTP 404"):
        _source(server).fetch(tf.tdx_tcb_info(bytes.fromhex("00906ea10000")))
    with pytest.raises(CollateralError, match="more than the 100 allowed"):
        _source(server, max_body_bytes=100).fetch(tf.tdx_tcb_info(FMSPC))
    with pytest.raises(CollateralError, match="header is larger than 100 bytes"):
        _source(server, max_header_bytes=100).fetch(tf.tdx_pck_crl())
    slow = tf.Request("amd", "/slow", "amd/slow", "a slow thing")
    started = time.monotonic()
    with pytest.raises(CollateralError, match="a slow thing: cannot fetch"):
        _source(server, timeout=0.3).fetch(slow)
    assert time.monotonic() - started < 1.4
    with pytest.raises(CollateralError, match="unknown AMD product"):
        tf.snp_cert_chain("Naples")
    with pytest.raises(CollateralError, match="FMSPC must be 6 bytes"):
        tf.tdx_tcb_info(b"\0")
    unreachable = tf.KdsPcsSource(base_url_intel="http://127.0.0.1:9",
                                  limits=tf.FetchLimits(timeout=1))
    with pytest.raises(CollateralError, match="cannot fetch"):
        unreachable.fetch(tf.tdx_qe_identity())
