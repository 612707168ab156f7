"""Loading TDX collateral from a directory (the one module of ``attestation.tdx`` doing I/O).

Files are recognised by content, not name: PCS JSON responses (``tcbInfo`` / ``enclaveIdentity``),
PEM issuer chains (by the CA they hold), CRLs in DER or PEM (by issuer) and the Intel SGX Root CA.
Files that are none of these (a quote, a README) are skipped, but a file that looks like
collateral, or carries one of the PCS names, must parse: otherwise :class:`CollateralError`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from attestation.crl import load_crl
from attestation.errors import CollateralError, MalformedEvidence
from attestation.tdx import collateral as coll
from attestation.tdx import pck

MAX_FILES = 64
MAX_FILE_BYTES = 1 << 20
KNOWN_NAMES = frozenset({
    "sample_tcbinfo_response", "sample_tcbinfo_response_v5", "sample_qeidentity_response",
    "tcb-info-issuer-chain.pem", "qe-identity-issuer-chain.pem", "pck-crl-issuer-chain.pem",
    "pckcrl", "rootcrl.der", "intel-sgx-root-ca.pem",
})
"""Names (case-insensitive) of the Intel PCS files; these must parse."""


@dataclass
class _Found:
    tcb_infos: list[tuple[str, bytes]] = field(default_factory=list)
    qe_identities: list[tuple[str, bytes]] = field(default_factory=list)
    signing_chains: list[tuple[str, bytes]] = field(default_factory=list)
    pck_crl_chains: list[tuple[str, bytes]] = field(default_factory=list)
    pck_crls: list[tuple[str, bytes]] = field(default_factory=list)
    root_crls: list[tuple[str, bytes]] = field(default_factory=list)
    roots: list[tuple[str, bytes]] = field(default_factory=list)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CollateralError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CollateralError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _classify_json(path: Path, data: bytes, found: _Found) -> None:
    try:
        coll.tcb_info_response(data)
    except MalformedEvidence as tcb_error:
        try:
            coll.qe_identity_response(data)
        except MalformedEvidence as qe_error:
            raise CollateralError(f"{path}: neither a TDX TCB info response ({tcb_error}) nor "
                                  f"a TD QE identity response ({qe_error})") from None
        found.qe_identities.append((path.name, data))
        return
    found.tcb_infos.append((path.name, data))


def _classify_pem_certs(path: Path, data: bytes, found: _Found) -> None:
    try:
        certs = pck.load_pem_chain(data, str(path))
    except MalformedEvidence as exc:
        raise CollateralError(str(exc)) from None
    names = {pck.common_name(c) for c in certs}
    if pck.TCB_SIGNING_CN in names:
        found.signing_chains.append((path.name, data))
    elif names & pck.PCK_CA_CNS:
        found.pck_crl_chains.append((path.name, data))
    elif names == {pck.ROOT_CN}:
        found.roots.append((path.name, data))
    else:
        raise CollateralError(f"{path}: certificates {sorted(names)} are no TDX collateral")


def _classify_crl(path: Path, crl: x509.CertificateRevocationList, data: bytes,
                  found: _Found) -> None:
    cns = crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    issuer = str(cns[0].value) if cns else ""
    if issuer == pck.ROOT_CN:
        found.root_crls.append((path.name, data))
    elif issuer in pck.PCK_CA_CNS:
        found.pck_crls.append((path.name, data))
    else:
        raise CollateralError(f"{path}: CRL issued by {issuer!r} is no TDX collateral")


def _classify(path: Path, data: bytes, found: _Found) -> None:
    known = path.name.lower() in KNOWN_NAMES
    head = data.lstrip()
    if head.startswith(b"{"):
        _classify_json(path, data, found)
    elif head.startswith(b"-----BEGIN X509 CRL") or (known and "crl" in path.name.lower()
                                                       and not path.name.endswith(".pem")):
        try:
            crl = load_crl(data, str(path))
        except MalformedEvidence as exc:
            raise CollateralError(str(exc)) from None
        _classify_crl(path, crl, data, found)
    elif head.startswith(b"-----BEGIN"):
        _classify_pem_certs(path, data, found)
    elif data[:1] == b"\x30":
        _classify_der(path, data, found, known)
    elif known:
        raise CollateralError(f"{path}: not a PCS JSON response, PEM chain or CRL")


def _classify_der(path: Path, data: bytes, found: _Found, known: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            crl = load_crl(data, str(path))
        except MalformedEvidence:
            pass
        else:
            _classify_crl(path, crl, data, found)
            return
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError:
            if known:
                raise CollateralError(f"{path}: not a DER CRL or certificate") from None
            return
    if pck.common_name(cert) != pck.ROOT_CN:
        raise CollateralError(f"{path}: DER certificate {pck.common_name(cert)!r} is no TDX "
                              "collateral")
    found.roots.append((path.name, data))


def _one(items: list[tuple[str, bytes]], what: str, directory: Path) -> bytes:
    if not items:
        raise CollateralError(f"--collateral {directory}: no {what} found")
    distinct = {data for _, data in items}
    if len(distinct) > 1:
        raise CollateralError(f"--collateral {directory}: several different {what}: "
                              + ", ".join(sorted(name for name, _ in items)))
    return items[0][1]


def _signing_chain(found: _Found, hint: str, directory: Path) -> bytes:
    named = [item for item in found.signing_chains if hint in item[0].lower()]
    return _one(named or found.signing_chains, "TCB signing issuer chain", directory)


def load_collateral_dir(directory: Path) -> coll.TdxCollateral:
    """Read a collateral directory laid out like Intel PCS responses saved to files."""
    if not directory.is_dir():
        raise CollateralError(f"--collateral {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if len(files) > MAX_FILES:
        raise CollateralError(f"--collateral {directory} holds more than {MAX_FILES} files")
    found = _Found()
    for path in files:
        _classify(path, _read(path), found)
    if not found.tcb_infos:
        raise CollateralError(f"--collateral {directory}: no TDX TCB info response found")
    return coll.TdxCollateral(
        tcb_infos=tuple(data for _, data in found.tcb_infos),
        qe_identity=_one(found.qe_identities, "TD QE identity response", directory),
        tcb_info_issuer_chain=_signing_chain(found, "tcb", directory),
        qe_identity_issuer_chain=_signing_chain(found, "qe", directory),
        pck_crl=_one(found.pck_crls, "PCK CRL", directory),
        root_crl=_one(found.root_crls, "Intel SGX Root CA CRL", directory),
        pck_crl_issuer_chain=_one(found.pck_crl_chains, "PCK CRL issuer chain", directory)
        if found.pck_crl_chains else b"",
        root_ca=_one(found.roots, "Intel SGX Root CA", directory) if found.roots else b"",
    )
