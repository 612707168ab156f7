"""Property tests: every parser of untrusted bytes raises only MalformedEvidence."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.bundle import decode_evidence, encode_bundle
from attestation.crl import load_crl
from attestation.errors import MalformedEvidence
from attestation.evidence import Evidence, Platform
from attestation.snp.report import REPORT_SIZE, parse_report
from attestation.tdx import collateral as coll
from attestation.tdx import pck
from attestation.tdx.quote import parse_quote
from tests.attestation.test_tdx_quote import real_quote
from tests.support.paths import vectors_dir

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_malformed(parse: object, data: bytes) -> None:
    assert callable(parse)
    with contextlib.suppress(MalformedEvidence):
        parse(data)


@pytest.fixture(scope="module")
def quote() -> bytes:
    return real_quote(vectors_dir())


@pytest.fixture(scope="module")
def tcb_info() -> bytes:
    return (vectors_dir() / "tdx" / "sample_tcbinfo_response_v5").read_bytes()


def _mutate(base: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(base)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[:len(out) - cut % 64]) if cut % 3 == 0 else bytes(out)


@FAST
@given(st.binary(max_size=2048))
def test_quote_parser_random(data: bytes) -> None:
    _only_malformed(parse_quote, data)


edits = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8)


@FAST
@given(edits, st.integers(0, 200))
def test_quote_parser_mutated(quote: bytes, changes: list[tuple[int, int]], cut: int) -> None:
    _only_malformed(parse_quote, _mutate(quote, changes, cut))


@FAST
@given(edits, st.integers(0, 200))
def test_tcb_info_parser_mutated(tcb_info: bytes, changes: list[tuple[int, int]],
                                 cut: int) -> None:
    _only_malformed(coll.tcb_info_response, _mutate(tcb_info, changes, cut))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4), max_leaves=20)


@FAST
@given(st.dictionaries(st.sampled_from(["id", "version", "issueDate", "nextUpdate", "fmspc",
                                        "pceId", "tcbType", "tcbEvaluationDataNumber",
                                        "tdxModule", "tcbLevels", "tdxModuleIdentities",
                                        "miscselect", "mrsigner", "isvprodid"]), json_values))
def test_collateral_object_parsers(value: dict[str, object]) -> None:
    for key, parse in (("tcbInfo", coll.tcb_info_response),
                       ("enclaveIdentity", coll.qe_identity_response)):
        raw = json.dumps({key: {"id": "TDX", "version": 3, **value},
                          "signature": "00" * 64}).encode()
        _only_malformed(parse, raw)


@FAST
@given(st.binary(max_size=600))
def test_sgx_extension_and_crl_parsers(data: bytes) -> None:
    _only_malformed(pck.parse_sgx_extension, data)
    _only_malformed(lambda d: load_crl(d, "crl"), data)
    _only_malformed(lambda d: pck.load_pem_chain(d, "chain"), b"-----BEGIN CERTIFICATE-----\n"
                    + data)


@FAST
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE), st.sampled_from([2, 3, 5]))
def test_snp_report_parser(data: bytes, version: int) -> None:
    _only_malformed(parse_report, version.to_bytes(4, "little") + data[4:])


@FAST
@given(st.binary(max_size=1500))
def test_bundle_decoder_random(data: bytes) -> None:
    _only_malformed(decode_evidence, data)


ascii_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.characters(max_codepoint=127),
                                                        max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4), max_leaves=20)


@FAST
@given(ascii_json, st.sampled_from(["platform", "evidence", "certificates", "format"]))
def test_bundle_decoder_json(value: object, key: str) -> None:
    """ASCII JSON values in every field (non-ASCII base64 text: the test below)."""
    body = json.loads(encode_bundle(Evidence(Platform.TDX, b"q", (b"\x30\x00",))))
    body[key] = value
    _only_malformed(decode_evidence, json.dumps(body).encode())


@pytest.mark.parametrize("key", ["evidence", "certificates"])
def test_bundle_decoder_non_ascii_base64(key: str) -> None:
    body = json.loads(encode_bundle(Evidence(Platform.TDX, b"q")))
    body[key] = ["\x80"] if key == "certificates" else "\x80"
    _only_malformed(decode_evidence, json.dumps(body).encode())


def test_vectors_present_for_fuzz_seeds(vectors: Path) -> None:
    assert (vectors / "tdx" / "sample_tcbinfo_response_v5").is_file()
