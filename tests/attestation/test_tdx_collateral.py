"""TDX collateral parsing (PCS JSON, PCK SGX extension) and the collateral directory loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attestation.errors import CollateralError, MalformedEvidence
from attestation.tdx import collateral as coll
from attestation.tdx import pck
from attestation.tdx.files import load_collateral_dir
from attestation.tdx.quote import parse_quote
from tests.attestation.test_tdx_quote import real_quote


def _tdx(vectors: Path, name: str) -> bytes:
    return (vectors / "tdx" / name).read_bytes()


def test_real_tcb_info_and_qe_identity(vectors: Path) -> None:
    signed, info = coll.tcb_info_response(_tdx(vectors, "sample_tcbInfo_response"))
    assert signed.body.startswith(b'{"id":"TDX"') and signed.body.endswith(b"]}")
    assert (info.fmspc.hex(), info.pce_id.hex(), info.tcb_evaluation_data_number) == (
        "50806f000000", "0000", 15)
    assert [lv.status for lv in info.levels] == ["UpToDate", "OutOfDate"]
    assert info.levels[0].sgx_components[:8] == (5, 5, 2, 2, 3, 1, 0, 3)
    assert info.tdx_module is not None and info.tdx_module.attributes_mask == b"\xff" * 8
    _, v5 = coll.tcb_info_response(_tdx(vectors, "sample_tcbinfo_response_v5"))
    assert [m.id for m in v5.tdx_module_identities] == ["TDX_03", "TDX_01"]
    assert [lv.isv_svn for lv in v5.tdx_module_identities[1].levels] == [6, 4, 2]
    _, qe = coll.qe_identity_response(_tdx(vectors, "sample_qeIdentity_response"))
    assert (qe.id, qe.isv_prod_id, qe.levels[0].isv_svn) == ("TD_QE", 2, 4)
    assert qe.attributes_mask.hex().startswith("fbffffff")


def test_real_pck_leaf_extensions(vectors: Path) -> None:
    leaf = pck.load_pem_chain(parse_quote(real_quote(vectors)).pck_chain_pem, "chain")[0]
    ext = pck.pck_extensions(leaf)
    assert (ext.fmspc.hex(), ext.pce_id.hex(), ext.pce_svn) == ("50806f000000", "0000", 11)
    assert ext.sgx_tcb_components == (3, 3, 2, 2, 2, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
    assert ext.cpu_svn == bytes(ext.sgx_tcb_components)


def test_pinned_root_matches_the_vector(vectors: Path) -> None:
    root = pck.load_pem_chain(_tdx(vectors, "intel-sgx-root-ca.pem"), "root")[0]
    assert pck.fingerprint(root) == pck.INTEL_SGX_ROOT_CA_SHA256


TCB = b'{"tcbInfo":{"id":"TDX"},"signature":"' + b"00" * 64 + b'"}'


@pytest.mark.parametrize("raw", [
    b"", b"[]", b"{}", b'{"tcbInfo":{}}', TCB + b"x", TCB.replace(b'"signature"', b'"tcbInfo"'),
    b'{"tcbInfo":{},"signature":"00","extra":1}', b'{"tcbInfo":NaN,"signature":"00"}',
    b'{"tcbInfo":[],"signature":"' + b"00" * 64 + b'"}',
    b'{"tcbInfo":{},"signature":"' + b"0 " * 64 + b'"}', b"\xff{", TCB,
])
def test_malformed_tcb_info_responses(raw: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        coll.tcb_info_response(raw)


def test_signed_json_keeps_exact_bytes() -> None:
    raw = b' { "signature" : "' + b"ab" * 64 + b'" , "tcbInfo" :  {"b": 1,  "a":[ 2 ]} } \n'
    signed = coll.signed_json(raw, "tcbInfo", "t")
    assert signed.body == b'{"b": 1,  "a":[ 2 ]}' and signed.signature == b"\xab" * 64


def test_loader_reads_the_vectors_dir_by_content(vectors: Path, tmp_path: Path) -> None:
    loaded = load_collateral_dir(vectors / "tdx")  # skips the quote and report.dat
    assert len(loaded.tcb_infos) == 2 and loaded.root_ca.startswith(b"-----BEGIN")
    for index, src in enumerate(sorted((vectors / "tdx").iterdir())):
        shutil.copy(src, tmp_path / f"file{index}")
    renamed = load_collateral_dir(tmp_path)
    assert (renamed.pck_crl, renamed.root_crl, renamed.qe_identity) == (
        loaded.pck_crl, loaded.root_crl, loaded.qe_identity)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("pckcrl", b"garbage", "CRL"),
    ("sample_qeIdentity_response", b'{"enclaveIdentity":1}', "neither"),
    ("intel-sgx-root-ca.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     "PEM"),
    ("rootcrl.der", None, "several different"),
])
def test_loader_is_strict_on_collateral(vectors: Path, tmp_path: Path, name: str,
                                        content: bytes | None, message: str) -> None:
    for src in (vectors / "tdx").iterdir():
        shutil.copy(src, tmp_path / src.name)
    if content is None:
        shutil.copy(vectors / "tdx" / "pckcrl", tmp_path / "another.crl")
        (tmp_path / "another.crl").write_bytes(_tdx(vectors, "rootcrl.der")[:-1] + b"\0")
    else:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(CollateralError, match=message):
        load_collateral_dir(tmp_path)


def test_loader_names_what_is_missing(vectors: Path, tmp_path: Path) -> None:
    for src in (vectors / "tdx").iterdir():
        if src.name != "pckcrl":
            shutil.copy(src, tmp_path / src.name)
    with pytest.raises(CollateralError, match="no PCK CRL"):
        load_collateral_dir(tmp_path)
    with pytest.raises(CollateralError, match="not a directory"):
        load_collateral_dir(tmp_path / "nope")
