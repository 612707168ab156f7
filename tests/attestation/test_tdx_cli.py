"""`ao-appliance attestation verify` on the real TDX quote and collateral: exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attestation.tdx.quote import HEADER_SIZE, TD_REPORT10_SIZE
from tests.attestation.test_tdx_quote import real_quote
from tests.support.paths import REPO

NOW = "2023-06-20T00:00:00Z"
DCAP_NOW = "2025-07-01T00:00:00Z"
MRTD_OFFSET = HEADER_SIZE + 136
REPORT_DATA_OFFSET = HEADER_SIZE + TD_REPORT10_SIZE - 64


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "attestation", "verify",
                           *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_shipped_vector_reaches_tcb_levels(vectors: Path) -> None:
    tdx = vectors / "tdx"
    out = _cli(tdx / "tdx_prod_quote_SPR_E4.dat", "--collateral", tdx, "--now", NOW)
    assert out.returncode == 1, out.stdout + out.stderr
    first, warning = out.stdout.splitlines()
    assert first.startswith("REJECTED at step TDX-14") and "TCB not supported" in first
    assert "below its lowest level because SGX component 1 is 3 < 5" in first
    assert warning == ("warning: 39 unsigned bytes after the quote's signature data were ignored "
                       "(covered by no signature)")
    assert "Traceback" not in out.stderr


def _dcap_qvl_sample(vectors: Path) -> tuple[bytes, Path]:
    return ((vectors / "tdx-dcap-qvl" / "tdx_quote").read_bytes(),
            vectors / "tdx-dcap-qvl" / "collateral")


def test_dcap_qvl_real_quote_verifies_up_to_date(vectors: Path) -> None:
    _, collateral = _dcap_qvl_sample(vectors)
    out = _cli(vectors / "tdx-dcap-qvl" / "tdx_quote", "--collateral", collateral,
               "--now", DCAP_NOW, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["tcb"]["status"] == "UpToDate" and result["details"]["advisory_ids"] == "none"
    assert result["steps"] == [f"TDX-{i}" for i in range(1, 21)]
    assert result["details"]["trailing_bytes"] == "70" and len(result["warnings"]) == 1
    human = _cli(vectors / "tdx-dcap-qvl" / "tdx_quote", "--collateral", collateral,
                 "--now", DCAP_NOW)
    assert human.stdout.splitlines()[:2] == [
        "verified: tdx evidence",
        "warning: 70 unsigned bytes after the quote's signature data were ignored (covered by "
        "no signature)"]


@pytest.mark.parametrize(("field", "offset"), [("MRTD", MRTD_OFFSET),
                                               ("REPORTDATA", REPORT_DATA_OFFSET)])
@pytest.mark.parametrize("sample", ["intel", "dcap-qvl"])
def test_bit_flips_in_signed_fields_fail_at_the_quote_signature(
        vectors: Path, tmp_path: Path, field: str, offset: int, sample: str) -> None:
    if sample == "intel":
        quote, collateral, now = ((vectors / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes(),
                                  vectors / "tdx", NOW)
    else:
        (quote, collateral), now = _dcap_qvl_sample(vectors), DCAP_NOW
    flipped = bytearray(quote)
    flipped[offset + 17] ^= 0x04
    path = tmp_path / f"{field}.dat"
    path.write_bytes(bytes(flipped))
    out = _cli(path, "--collateral", collateral, "--now", now, "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    assert json.loads(out.stdout)["step"] == "TDX-7", out.stdout


def test_exact_quote_is_rejected_at_tcb_levels(vectors: Path, tmp_path: Path) -> None:
    quote = tmp_path / "quote.dat"
    quote.write_bytes(real_quote(vectors))
    out = _cli(quote, "--collateral", vectors / "tdx", "--now", NOW, "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    failure = json.loads(out.stdout)
    assert failure["step"] == "TDX-14" and "TCB not supported" in failure["reason"]
    human = _cli(quote, "--collateral", vectors / "tdx", "--now", NOW)
    assert human.stdout.startswith("REJECTED at step TDX-14") and not human.stderr


def test_bad_collateral_is_a_usage_error(vectors: Path, tmp_path: Path) -> None:
    (tmp_path / "pckcrl").write_bytes(b"not a crl")
    out = _cli(vectors / "tdx" / "tdx_prod_quote_SPR_E4.dat", "--collateral", tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    missing = _cli(vectors / "tdx" / "tdx_prod_quote_SPR_E4.dat")
    assert missing.returncode == 2 and "collateral" in missing.stderr.lower()
