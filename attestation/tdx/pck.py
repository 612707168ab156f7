"""PCK certificates and the Intel SGX trust anchor (Intel SGX PCK Certificate and CRL Profile).

The PCK leaf carries the platform's TCB in the SGX extension ``1.2.840.113741.1.13.1``: a
SEQUENCE of (OID, value) pairs among which TCB (``.2``: 16 component SVNs, PCESVN, CPUSVN),
PCE-ID (``.3``) and FMSPC (``.4``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import MalformedEvidence

INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
"""SHA-256 of the DER Intel SGX Root CA certificate: the only TDX trust anchor."""

ROOT_CN = "Intel SGX Root CA"
PCK_CN = "Intel SGX PCK Certificate"
PCK_CA_CNS = frozenset({"Intel SGX PCK Platform CA", "Intel SGX PCK Processor CA"})
TCB_SIGNING_CN = "Intel SGX TCB Signing"

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_TCB = SGX_EXTENSION_OID + ".2"
_PCE_ID = SGX_EXTENSION_OID + ".3"
_FMSPC = SGX_EXTENSION_OID + ".4"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"

_SEQUENCE, _INTEGER, _OCTETS, _OID = 0x30, 0x02, 0x04, 0x06


@dataclass(frozen=True)
class PckExtensions:
    """The facts a PCK leaf certifies about its platform."""

    fmspc: bytes
    pce_id: bytes
    sgx_tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER TLV at ``pos``: (tag, value, next position). Definite lengths only."""
    if pos + 2 > len(data):
        raise MalformedEvidence("PCK SGX extension: truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 3 or pos + count > len(data):
            raise MalformedEvidence("PCK SGX extension: bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise MalformedEvidence("PCK SGX extension: DER value runs past its container")
    return tag, data[pos:pos + length], pos + length


def _items(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, value, pos = _tlv(data, pos)
        out.append((tag, value))
    return out


def _oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise MalformedEvidence("PCK SGX extension: bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    acc = 0
    for byte in value:
        acc = acc << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def _pairs(data: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for tag, entry in _items(data):
        parts = _items(entry)
        if tag != _SEQUENCE or len(parts) != 2 or parts[0][0] != _OID:
            raise MalformedEvidence(f"PCK SGX extension: {what} entry is not (OID, value)")
        oid = _oid(parts[0][1])
        if oid in out:
            raise MalformedEvidence(f"PCK SGX extension: duplicate {oid}")
        out[oid] = parts[1]
    return out


def _small_int(item: tuple[int, bytes], what: str, limit: int) -> int:
    tag, value = item
    if tag != _INTEGER or not value or len(value) > 3:
        raise MalformedEvidence(f"PCK SGX extension: {what} is not a small INTEGER")
    number = int.from_bytes(value, "big", signed=True)
    if not 0 <= number <= limit:
        raise MalformedEvidence(f"PCK SGX extension: {what}={number} out of range")
    return number


def _octets(pairs: dict[str, tuple[int, bytes]], oid: str, size: int, what: str) -> bytes:
    item = pairs.get(oid)
    if item is None or item[0] != _OCTETS or len(item[1]) != size:
        raise MalformedEvidence(f"PCK SGX extension: {what} ({oid}) missing or not {size} bytes")
    return item[1]


def parse_sgx_extension(der: bytes) -> PckExtensions:
    """Decode the value of extension 1.2.840.113741.1.13.1."""
    top = _items(der)
    if len(top) != 1 or top[0][0] != _SEQUENCE:
        raise MalformedEvidence("PCK SGX extension: not one SEQUENCE")
    pairs = _pairs(top[0][1], "top-level")
    tcb_item = pairs.get(_TCB)
    if tcb_item is None or tcb_item[0] != _SEQUENCE:
        raise MalformedEvidence("PCK SGX extension: TCB (.2) missing")
    tcb = _pairs(tcb_item[1], "TCB")
    components = []
    for index in range(1, 17):
        item = tcb.get(f"{_TCB}.{index}")
        if item is None:
            raise MalformedEvidence(f"PCK SGX extension: TCB component {index} missing")
        components.append(_small_int(item, f"SGX TCB component {index}", 255))
    pce = tcb.get(_PCESVN)
    if pce is None:
        raise MalformedEvidence("PCK SGX extension: PCESVN missing")
    return PckExtensions(
        fmspc=_octets(pairs, _FMSPC, 6, "FMSPC"),
        pce_id=_octets(pairs, _PCE_ID, 2, "PCE-ID"),
        sgx_tcb_components=tuple(components),
        pce_svn=_small_int(pce, "PCESVN", 0xFFFF),
        cpu_svn=_octets(tcb, _CPUSVN, 16, "CPUSVN"),
    )


def pck_extensions(leaf: x509.Certificate) -> PckExtensions:
    """The SGX extension of a PCK leaf, decoded."""
    for ext in leaf.extensions:
        if ext.oid.dotted_string == SGX_EXTENSION_OID:
            if not isinstance(ext.value, x509.UnrecognizedExtension):
                break
            return parse_sgx_extension(ext.value.value)
    raise MalformedEvidence("PCK certificate has no SGX extension 1.2.840.113741.1.13.1")


MAX_CHAIN = 16
"""A PCK chain is leaf, Platform/Processor CA, Root CA."""


def load_pem_chain(blob: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM blob (at least one), fully decoded up front."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(bytes(blob))
            if len(certs) > MAX_CHAIN:
                raise ValueError(f"{len(certs)} certificates, more than {MAX_CHAIN}")
            for cert in certs:
                _ = (cert.subject, cert.issuer, cert.extensions, cert.not_valid_after_utc,
                     cert.public_key())
    except (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        raise MalformedEvidence(f"{what}: not a PEM certificate chain ({exc})") from exc
    return certs


def fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def common_name(cert: x509.Certificate) -> str:
    """The subject CN, or '' when absent."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def p256_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey | None:
    """The certificate's public key if it is ECDSA P-256, else None."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent`` (a P-256 CA) signed ``child`` with ECDSA SHA-256 under its name."""
    key = p256_key(parent)
    if key is None or child.issuer != parent.subject:
        return False
    if not isinstance(child.signature_hash_algorithm, hashes.SHA256):
        return False
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except Exception:  # noqa: BLE001 - any failure to verify is a rejection
        return False
    return True


def is_ca(cert: x509.Certificate) -> bool:
    """Whether basicConstraints says CA:TRUE."""
    try:
        value = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return value.ca


def pinned_root(certs: Sequence[x509.Certificate], pin: str) -> x509.Certificate | None:
    """The self-signed certificate with fingerprint ``pin`` among ``certs``, if any."""
    for cert in certs:
        if fingerprint(cert) == pin and issued_by(cert, cert):
            return cert
    return None
