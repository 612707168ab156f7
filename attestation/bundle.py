"""Evidence bundles: one JSON file with a report or quote and the certificates that came with it.

``decode_evidence`` also accepts a raw SEV-SNP report, a raw TDX quote, and the data of a node's
``Attestation`` item (DESIGN §4), whose JSON has the same ``platform``/``evidence``/``certificates``
fields. Pure: bytes in, :class:`Evidence` or :class:`MalformedEvidence` out.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

from attestation.errors import MalformedEvidence
from attestation.evidence import Evidence, Platform
from attestation.snp.report import REPORT_SIZE, SUPPORTED_VERSIONS

BUNDLE_FORMAT = "ao-appliance-evidence/v1"
MAX_BUNDLE_BYTES = 4 << 20
MAX_CERTIFICATES = 16
_TDX_TEE_TYPE = 0x81


def _certificate_text(blob: bytes) -> str:
    if blob.lstrip().startswith(b"-----BEGIN"):
        return blob.decode("ascii")
    return base64.b64encode(blob).decode("ascii")


def encode_bundle(evidence: Evidence) -> bytes:
    """The bundle JSON for ``evidence`` (PEM certificates as text, DER ones as base64)."""
    body = {
        "format": BUNDLE_FORMAT,
        "platform": str(evidence.platform),
        "evidence": base64.b64encode(evidence.raw).decode("ascii"),
        "certificates": [_certificate_text(c) for c in evidence.certificates],
    }
    return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedEvidence(f"evidence bundle: {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEvidence(f"evidence bundle: {what} is not valid base64") from exc


def _from_json(data: bytes) -> Evidence:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvidence(f"evidence bundle: not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise MalformedEvidence("evidence bundle: top level must be an object")
    if "format" in body and body["format"] != BUNDLE_FORMAT:
        raise MalformedEvidence(f"evidence bundle: unknown format {body['format']!r}")
    try:
        platform = Platform(str(body.get("platform")))
    except ValueError:
        raise MalformedEvidence(
            f"evidence bundle: platform must be one of {[str(p) for p in Platform]}") from None
    certificates = body.get("certificates", [])
    if not isinstance(certificates, list) or len(certificates) > MAX_CERTIFICATES:
        raise MalformedEvidence(
            f"evidence bundle: certificates must be a list of at most {MAX_CERTIFICATES}")
    blobs: list[bytes] = []
    for index, cert in enumerate(certificates):
        if isinstance(cert, str) and cert.lstrip().startswith("-----BEGIN"):
            blobs.append(cert.encode("ascii", "replace"))
        else:
            blobs.append(_b64(cert, f"certificates[{index}]"))
    return Evidence(platform, _b64(body.get("evidence"), "evidence"), tuple(blobs))


def decode_evidence(data: bytes) -> Evidence:
    """Recognise a bundle / Attestation-item JSON, a raw SNP report, or a raw TDX quote."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise MalformedEvidence(f"evidence: {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
    if data.lstrip()[:1] == b"{":
        return _from_json(data)
    if len(data) >= 8:
        quote_version, _, tee_type = struct.unpack_from("<HHI", data)
        if quote_version in (4, 5) and tee_type == _TDX_TEE_TYPE:
            return Evidence(Platform.TDX, data)
        if struct.unpack_from("<I", data)[0] in SUPPORTED_VERSIONS:
            return Evidence(Platform.SEV_SNP, data)  # a wrong size is the verifier's SNP-1
    raise MalformedEvidence(
        f"evidence: {len(data)} bytes are neither a bundle (JSON), an SEV-SNP report "
        f"({REPORT_SIZE} bytes, version {sorted(SUPPORTED_VERSIONS)}) nor a TDX quote v4/v5")
