"""`ao-appliance attestation verify` on the real TDX quote and collateral: exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.attestation.test_tdx_quote import real_quote
from tests.support.paths import REPO

NOW = "2023-06-20T00:00:00Z"


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "attestation", "verify",
                           *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_shipped_vector_is_rejected_at_parse(vectors: Path) -> None:
    tdx = vectors / "tdx"
    out = _cli(tdx / "tdx_prod_quote_SPR_E4.dat", "--collateral", tdx, "--now", NOW)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith("REJECTED at step TDX-1") and "39 trailing bytes" in out.stdout
    assert "Traceback" not in out.stderr


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
