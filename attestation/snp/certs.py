"""Certificate loading and the pinned AMD trust anchors (facts: SHA-256 of each DER cert)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from attestation import crl
from attestation.errors import MalformedEvidence

ARK_SHA256: dict[str, str] = {
    "Milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "Genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "Turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}
"""Pinned AMD Root Keys, by product."""

ASK_SHA256: dict[tuple[str, str], str] = {
    ("Milan", "VCEK"): "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    ("Milan", "VLEK"): "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    ("Genoa", "VCEK"): "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    ("Genoa", "VLEK"): "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    ("Turin", "VCEK"): "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    ("Turin", "VLEK"): "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
}
"""Pinned AMD SEV Keys (ASK, signs VCEKs) and SEV VLEK keys (ASVK, signs VLEKs)."""


MAX_CERTIFICATES = 32
"""A chain is VCEK/VLEK, ASK/ASVK, ARK: anything past this is not a chain to verify."""


def load_certificates(blobs: Sequence[bytes]) -> list[x509.Certificate]:
    """Parse DER or PEM blobs (a PEM blob may hold several certificates)."""
    out: list[x509.Certificate] = []
    for blob in blobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if bytes(blob).lstrip().startswith(b"-----BEGIN"):
                    parsed = x509.load_pem_x509_certificates(bytes(blob))
                else:
                    parsed = [x509.load_der_x509_certificate(bytes(blob))]
                for cert in parsed:
                    _ = (cert.subject, cert.issuer, cert.extensions, cert.not_valid_after_utc)
        except (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
            raise MalformedEvidence(f"certificate cannot be parsed: {exc}") from exc
        out.extend(parsed)
        if len(out) > MAX_CERTIFICATES:
            raise MalformedEvidence(f"more than {MAX_CERTIFICATES} certificates")
    return out


def load_crl(blob: bytes) -> x509.CertificateRevocationList:
    """An AMD KDS CRL (DER, or PEM), fully decoded up front."""
    return crl.load_crl(blob, "AMD KDS CRL")


def is_crl(blob: bytes) -> bool:
    """Whether ``blob`` parses as a CRL (to tell CRL files from certificates in a directory)."""
    try:
        load_crl(blob)
    except MalformedEvidence:
        return False
    return True


def crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` signed ``crl`` under its name (RSA-PSS SHA-384 salt 48, as AMD KDS)."""
    key = issuer.public_key()
    if crl.issuer != issuer.subject or not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
        key.verify(crl.signature, crl.tbs_certlist_bytes, pss, hashes.SHA384())
    except Exception:  # noqa: BLE001 - any failure to verify is a rejection
        return False
    return True


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent`` signed ``child`` (RSA-PSS SHA-384 salt 48, or ECDSA SHA-384)."""
    key = parent.public_key()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(key, rsa.RSAPublicKey):
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
                key.verify(child.signature, child.tbs_certificate_bytes, pss, hashes.SHA384())
            elif isinstance(key, ec.EllipticCurvePublicKey):
                algo = child.signature_hash_algorithm
                if not isinstance(algo, hashes.SHA384):
                    return False
                key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(algo))
            else:
                return False
    except Exception:  # noqa: BLE001 - any failure to verify is a rejection
        return False
    return child.issuer == parent.subject


def extension_bytes(cert: x509.Certificate, oid: str) -> bytes | None:
    """Raw DER value of a non-standard extension, or None when absent."""
    for ext in cert.extensions:
        if ext.oid.dotted_string == oid and isinstance(ext.value, x509.UnrecognizedExtension):
            return ext.value.value
    return None


def der_integer(value: bytes) -> int:
    """Decode a small DER INTEGER (the AMD TCB extensions)."""
    if len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2 or value[1] > 8:
        raise MalformedEvidence("certificate TCB extension is not a small DER INTEGER")
    return int.from_bytes(value[2:], "big", signed=True)


def der_string(value: bytes) -> str:
    """Decode a short DER string (IA5String/UTF8String/PrintableString)."""
    if len(value) < 2 or value[1] != len(value) - 2 or value[1] > 127:
        raise MalformedEvidence("certificate string extension is malformed")
    return value[2:].decode("ascii", errors="replace")
