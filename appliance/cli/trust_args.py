"""Command-line trust inputs shared by ``attestation verify`` and ``verify``: policy, certificates,
TDX collateral, the emulated opt-in and the verification time."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from appliance.errors import UsageError
from attestation.errors import MalformedEvidence
from attestation.policy import Policy
from attestation.policy_file import load_policy
from attestation.snp.certs import is_crl, load_certificates
from attestation.tdx.collateral import TdxCollateral
from attestation.tdx.files import load_collateral_dir

MAX_INPUT_BYTES = 4 << 20
MAX_DIR_FILES = 64
EMULATED_REFUSED_HINT = ("pass --allow-emulated to accept it (INSECURE: emulated evidence proves "
                         "nothing about hardware; for tests only)")
EMULATED_BANNER = "EMULATED EVIDENCE: no hardware vouched for this; it proves nothing about a TEE."


def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    """``--certs --collateral --policy --allow-emulated --now --json``."""
    parser.add_argument("--certs", type=Path,
                        help="dir of VCEK/VLEK, ASK/ASVK, ARK and AMD KDS CRLs (DER or PEM)")
    parser.add_argument("--collateral", type=Path, help="dir of TDX collateral")
    parser.add_argument("--policy", type=Path, help="policy YAML (reference values, TCB, debug)")
    parser.add_argument("--allow-emulated", action="store_true",
                        help="accept emulated evidence (INSECURE: proves nothing about hardware)")
    parser.add_argument("--now", help="verification time, ISO 8601 (default: now)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def read_input(path: Path, what: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """Read at most ``limit`` bytes of a user-named file; problems are UsageErrors."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit} bytes")
    return data


def _cert_dir_files(directory: Path) -> list[tuple[Path, bytes]]:
    if not directory.is_dir():
        raise UsageError(f"--certs {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if len(files) > MAX_DIR_FILES:
        raise UsageError(f"--certs {directory} holds more than {MAX_DIR_FILES} files")
    return [(path, read_input(path, "certificate", 1 << 20)) for path in files]


def snp_crls(directory: Path | None) -> list[bytes]:
    """The CRL files in ``--certs`` (AMD KDS ``/vcek/v1/{product}/crl``, DER or PEM)."""
    if directory is None:
        return []
    return [blob for _, blob in _cert_dir_files(directory) if is_crl(blob)]


def certificates(directory: Path | None) -> list[bytes]:
    """Every certificate file in ``--certs`` (any order, DER or PEM; CRL files are skipped)."""
    if directory is None:
        return []
    blobs = []
    for path, blob in _cert_dir_files(directory):
        if is_crl(blob):
            continue
        try:
            load_certificates([blob])
        except MalformedEvidence as exc:
            raise UsageError(f"{path}: not a DER or PEM certificate ({exc})") from None
        blobs.append(blob)
    return blobs


def policy(path: Path | None) -> tuple[Policy, str]:
    """The ``--policy`` file, or an explicit any-measurement policy and a note saying so."""
    if path is None:
        return Policy(any_measurement=True), "none given: measurement NOT checked"
    text = read_input(path, "--policy", 1 << 20).decode("utf-8", "replace")
    return load_policy(text, str(path)), f"{path}: satisfied"


def now(text: str | None) -> datetime:
    """``--now`` (ISO 8601, UTC when no zone) or the current time."""
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--now {text!r} is not ISO 8601") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def tdx_collateral(directory: Path | None) -> TdxCollateral | None:
    """The ``--collateral`` directory loaded for TDX verification, or None."""
    if directory is None:
        return None
    if not directory.is_dir():
        raise UsageError(f"--collateral {directory} is not a directory")
    return load_collateral_dir(directory)

