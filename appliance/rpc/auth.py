"""Who may call: operator client certificates on TLS, local callers on the plaintext listeners.

On TLS the handshake already required a client certificate signed by the operator CA; the
allow-list then names the identities accepted among those: an entry matches the certificate's
subject common name or one of its subjectAltName URIs or DNS names. An empty allow-list accepts
every certificate the CA signed. Calls without TLS are accepted only from the unix socket or a
loopback peer (the only places the server binds without TLS).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID


@functools.lru_cache(maxsize=256)
def certificate_identities(pem: bytes) -> frozenset[str]:
    """Subject CNs, SAN URIs and SAN DNS names of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    names = {str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(names)
    names.update(san.get_values_for_type(x509.UniformResourceIdentifier))
    names.update(san.get_values_for_type(x509.DNSName))
    return frozenset(names)


def _first(auth: Mapping[str, Sequence[bytes]], key: str) -> bytes | None:
    values = auth.get(key) or ()
    return values[0] if values else None


def is_local_peer(peer: str) -> bool:
    """Whether a gRPC peer string (``unix:...``, ``ipv4:h:p``, ``ipv6:[h]:p``) is local."""
    if peer.startswith("unix:"):
        return True
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rpartition(":")[0]
    elif kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]")
    else:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessPolicy:
    """The allow-list of client identities (empty: any certificate the operator CA signed)."""

    allowed_clients: frozenset[str] = frozenset()

    def refusal(self, auth: Mapping[str, Sequence[bytes]], peer: str) -> str | None:
        """Why a call is refused, or None when it may proceed."""
        if _first(auth, "transport_security_type") != b"ssl":
            return None if is_local_peer(peer) else "plaintext calls are accepted only locally"
        pem = _first(auth, "x509_pem_cert")
        if pem is None:
            return "a client certificate is required"
        if not self.allowed_clients:
            return None
        if certificate_identities(pem) & self.allowed_clients:
            return None
        return "client certificate is not on the allow-list"
