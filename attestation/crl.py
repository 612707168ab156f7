"""Certificate revocation lists as the vendors publish them (Intel PCS and AMD KDS alike)."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from attestation.errors import MalformedEvidence


def load_crl(blob: bytes, what: str) -> x509.CertificateRevocationList:
    """A CRL in DER or PEM, fully decoded up front (so no later access raises)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = bytes(blob)
            crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN")
                   else x509.load_der_x509_crl(data))
            _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, list(crl),
                 crl.extensions)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise MalformedEvidence(f"{what}: not a DER or PEM CRL ({exc})") from exc
    return crl
