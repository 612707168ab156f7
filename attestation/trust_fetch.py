"""Fetching certificates and collateral for verification: an interface and three sources.

Verification takes certificates and collateral as bytes and never fetches anything; this module
is where they come from. :class:`CollateralSource` is the interface; :class:`DirectorySource`
reads operator-provided files, :class:`KdsPcsSource` asks AMD KDS and Intel PCS over HTTPS, and
:class:`CachingSource` keeps what an inner source returned on disk and, offline, answers only from
there. Every failure is a :class:`CollateralError` naming exactly what was asked for.

The on-disk layout (``Request.key``) is the same for the cache and for a directory source, so a
warmed cache can be copied to an air-gapped verifier and read with ``DirectorySource``.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from attestation.atomic import write_atomically
from attestation.errors import CollateralError

SNP_PRODUCTS = frozenset({"Milan", "Genoa", "Turin"})
PCK_CAS = frozenset({"platform", "processor"})
INTEL_ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
_CHAIN_SUFFIX = ".issuer-chain.pem"
_TCB_PARAMS = (("bootloader", "blSPL"), ("tee", "teeSPL"), ("snp", "snpSPL"),
               ("microcode", "ucodeSPL"))


@dataclass(frozen=True)
class Collateral:
    """A response body and, where Intel PCS sends one, its issuer chain (PEM, URL-decoded)."""

    body: bytes
    issuer_chain: bytes | None = None


@dataclass(frozen=True)
class Request:
    """One piece of collateral: where it lives on a service and under which key it is stored."""

    service: str  # "amd" or "intel"
    path: str  # URL path and query, or a full URL for the Intel root CRL
    key: str  # relative file path in a cache or collateral directory
    what: str  # human description for errors
    issuer_header: str | None = None


@dataclass(frozen=True)
class FetchLimits:
    """Network limits: per-request timeout (seconds) and the largest body and header accepted."""

    timeout: float = 10.0
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 64 << 10


class CollateralSource(Protocol):
    """Anything that can supply AMD certificates and Intel TDX collateral as bytes."""

    def fetch(self, request: Request) -> Collateral:
        """The collateral for ``request``, or CollateralError saying what is missing."""
        ...


# --- requests ----------------------------------------------------------------------------------

def _product(product: str) -> str:
    if product not in SNP_PRODUCTS:
        raise CollateralError(f"unknown AMD product {product!r} (one of "
                              f"{', '.join(sorted(SNP_PRODUCTS))})")
    return product


def snp_vcek(product: str, hwid: bytes, reported_tcb: Mapping[str, int]) -> Request:
    """The VCEK for chip ``hwid`` at ``reported_tcb`` (bootloader/tee/snp/microcode[/fmc]).

    ``hwid`` is the report's CHIP_ID (64 bytes), or its first 8 bytes for Turin as KDS expects.
    """
    product = _product(product)
    if len(hwid) not in (8, 64):
        raise CollateralError(f"VCEK hwid must be 8 or 64 bytes, got {len(hwid)}")
    params = list(_TCB_PARAMS) + ([("fmc", "fmcSPL")] if "fmc" in reported_tcb else [])
    query: list[tuple[str, str]] = []
    for name, param in params:
        value = reported_tcb.get(name)
        if value is None or not 0 <= value <= 255:
            raise CollateralError(f"VCEK request needs reported TCB {name} in 0..255")
        query.append((param, f"{value:02d}"))
    spl = "-".join(f"{param}{value}" for param, value in query)
    return Request("amd", f"/vcek/v1/{product}/{hwid.hex()}?{urllib.parse.urlencode(query)}",
                   f"amd/vcek/{product}/{hwid.hex()}/{spl}.der",
                   f"the {product} VCEK for hwid {hwid.hex()[:16]}… at TCB {spl}")


def snp_cert_chain(product: str, key: str = "vcek") -> Request:
    """The ASK (or ASVK for ``key="vlek"``) + ARK chain of ``product``, PEM."""
    product = _product(product)
    if key not in ("vcek", "vlek"):
        raise CollateralError(f"signing key type must be vcek or vlek, got {key!r}")
    return Request("amd", f"/{key}/v1/{product}/cert_chain",
                   f"amd/{key}/{product}/cert_chain.pem", f"the {product} {key.upper()} cert chain")


def snp_crl(product: str, key: str = "vcek") -> Request:
    """The ARK-signed CRL of ``product`` revoking ASKs (``key="vlek"``: ASVKs), DER."""
    product = _product(product)
    if key not in ("vcek", "vlek"):
        raise CollateralError(f"signing key type must be vcek or vlek, got {key!r}")
    return Request("amd", f"/{key}/v1/{product}/crl", f"amd/{key}/{product}/crl.der",
                   f"the {product} {key.upper()} CRL")


def tdx_tcb_info(fmspc: bytes) -> Request:
    """TDX TCB info (JSON) for a platform's FMSPC (6 bytes), with its issuer chain."""
    if len(fmspc) != 6:
        raise CollateralError(f"FMSPC must be 6 bytes, got {len(fmspc)}")
    return Request("intel", f"/tdx/certification/v4/tcb?fmspc={fmspc.hex()}",
                   f"intel/tdx/tcb-info/{fmspc.hex()}.json",
                   f"TDX TCB info for FMSPC {fmspc.hex()}", "TCB-Info-Issuer-Chain")


def tdx_qe_identity() -> Request:
    """The TDX quoting enclave identity (JSON), with its issuer chain."""
    return Request("intel", "/tdx/certification/v4/qe/identity", "intel/tdx/qe-identity.json",
                   "the TDX QE identity", "SGX-Enclave-Identity-Issuer-Chain")


def tdx_pck_crl(ca: str = "platform") -> Request:
    """The PCK CRL (DER) of the ``platform`` or ``processor`` CA, with its issuer chain."""
    if ca not in PCK_CAS:
        raise CollateralError(f"PCK CA must be platform or processor, got {ca!r}")
    return Request("intel", f"/sgx/certification/v4/pckcrl?ca={ca}&encoding=der",
                   f"intel/pckcrl-{ca}.der", f"the PCK {ca} CA CRL", "SGX-PCK-CRL-Issuer-Chain")


def root_crl() -> Request:
    """The Intel SGX Root CA CRL (DER), from the CRL distribution point of the root CA."""
    return Request("intel", INTEL_ROOT_CRL_URL, "intel/root-ca.crl.der",
                   "the Intel SGX Root CA CRL")


# --- sources -----------------------------------------------------------------------------------

def _read_limited(path: Path, limit: int, what: str) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise CollateralError(f"{what}: {path} is larger than {limit} bytes")
    return data


@dataclass(frozen=True)
class DirectorySource:
    """Operator-provided files under ``root``, laid out as ``Request.key`` (plus
    ``KEY.issuer-chain.pem`` for Intel collateral that has one)."""

    root: Path
    limits: FetchLimits = field(default_factory=FetchLimits)

    def fetch(self, request: Request) -> Collateral:
        """The file for ``request``; a missing one is named in the CollateralError."""
        path = self.root / request.key
        try:
            body = _read_limited(path, self.limits.max_body_bytes, request.what)
        except FileNotFoundError:
            raise CollateralError(f"{request.what} is missing: expected {path}") from None
        except OSError as exc:
            raise CollateralError(f"{request.what}: {path}: {exc.strerror or exc}") from None
        chain = None
        if request.issuer_header is not None:
            chain_path = path.with_name(path.name + _CHAIN_SUFFIX)
            try:
                chain = _read_limited(chain_path, self.limits.max_header_bytes, request.what)
            except FileNotFoundError:
                raise CollateralError(f"the issuer chain of {request.what} is missing: expected "
                                      f"{chain_path}") from None
            except OSError as exc:
                raise CollateralError(f"{request.what}: {chain_path}: "
                                      f"{exc.strerror or exc}") from None
        return Collateral(body, chain)


@dataclass(frozen=True)
class KdsPcsSource:
    """AMD KDS and Intel PCS (API v4) over HTTP(S), with ``limits`` on time and size."""

    base_url_amd: str = "https://kdsintf.amd.com"
    base_url_intel: str = "https://api.trustedservices.intel.com"
    root_crl_url: str = INTEL_ROOT_CRL_URL
    limits: FetchLimits = field(default_factory=FetchLimits)

    def url(self, request: Request) -> str:
        """The URL ``request`` is fetched from."""
        if request.path == INTEL_ROOT_CRL_URL:
            return self.root_crl_url
        base = self.base_url_amd if request.service == "amd" else self.base_url_intel
        return base.rstrip("/") + request.path

    def fetch(self, request: Request) -> Collateral:
        """GET the collateral; HTTP errors, timeouts and oversize bodies are CollateralErrors."""
        url = self.url(request)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise CollateralError(f"{request.what}: refusing non-HTTP URL {url}")
        try:
            with urllib.request.urlopen(url, timeout=self.limits.timeout) as response:  # noqa: S310
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() \
                        and int(length) > self.limits.max_body_bytes:
                    raise CollateralError(f"{request.what}: {url} announces {length} bytes, more "
                                          f"than the {self.limits.max_body_bytes} allowed")
                body = response.read(self.limits.max_body_bytes + 1)
                header = response.headers.get(request.issuer_header) \
                    if request.issuer_header else None
        except urllib.error.HTTPError as exc:
            raise CollateralError(f"{request.what}: {url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CollateralError(f"{request.what}: cannot fetch {url}: {reason}") from None
        if len(body) > self.limits.max_body_bytes:
            raise CollateralError(f"{request.what}: {url} sent more than "
                                  f"{self.limits.max_body_bytes} bytes")
        chain = None
        if request.issuer_header is not None:
            if header is None:
                raise CollateralError(f"{request.what}: {url} sent no {request.issuer_header} "
                                      "header")
            if len(header) > self.limits.max_header_bytes:
                raise CollateralError(f"{request.what}: {request.issuer_header} header is larger "
                                      f"than {self.limits.max_header_bytes} bytes")
            chain = urllib.parse.unquote(header).encode("ascii", "replace")
        return Collateral(body, chain)


_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


@dataclass(frozen=True)
class CachingSource:
    """``inner`` behind a disk cache in ``cache_dir`` (same layout as :class:`DirectorySource`).

    A cached entry younger than ``max_age`` seconds (any age when None) is returned without asking
    ``inner``. With ``offline=True`` ``inner`` is never asked: a missing entry is a CollateralError
    naming the collateral and the file it would be in. Collateral validity is still checked by
    the verifier at its ``now``; the cache only avoids repeated downloads.
    """

    inner: CollateralSource | None
    cache_dir: Path
    offline: bool = False
    max_age: float | None = None
    limits: FetchLimits = field(default_factory=FetchLimits)

    def _path(self, request: Request) -> Path:
        if not _SAFE_KEY.match(request.key) or ".." in request.key.split("/"):
            raise CollateralError(f"{request.what}: unusable cache key {request.key!r}")
        return self.cache_dir / request.key

    def _fresh(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return False
        return self.offline or self.max_age is None or age <= self.max_age

    def fetch(self, request: Request) -> Collateral:
        """From the cache when present (and fresh), else from ``inner``, storing the answer."""
        path = self._path(request)
        if self._fresh(path):
            return DirectorySource(self.cache_dir, self.limits).fetch(request)
        if self.offline or self.inner is None:
            raise CollateralError(f"offline: {request.what} is not in the cache (expected "
                                  f"{path}); fetch it while online or place the file there")
        collateral = self.inner.fetch(request)
        try:
            if collateral.issuer_chain is not None:
                write_atomically(path.with_name(path.name + _CHAIN_SUFFIX),
                                  collateral.issuer_chain)
            write_atomically(path, collateral.body)
        except OSError as exc:
            raise CollateralError(f"{request.what}: cannot write cache {path}: "
                                  f"{exc.strerror or exc}") from None
        return collateral


@dataclass(frozen=True)
class CollateralClient:
    """The named requests over any :class:`CollateralSource`."""

    source: CollateralSource

    def snp_vcek(self, product: str, hwid: bytes, reported_tcb: Mapping[str, int]) -> bytes:
        """The VCEK (DER) for ``hwid`` at ``reported_tcb``."""
        return self.source.fetch(snp_vcek(product, hwid, reported_tcb)).body

    def snp_cert_chain(self, product: str, key: str = "vcek") -> bytes:
        """ASK/ASVK + ARK (PEM) of ``product``."""
        return self.source.fetch(snp_cert_chain(product, key)).body

    def snp_crl(self, product: str, key: str = "vcek") -> bytes:
        """The ARK-signed CRL (DER) of ``product``."""
        return self.source.fetch(snp_crl(product, key)).body

    def tdx_tcb_info(self, fmspc: bytes) -> Collateral:
        """TDX TCB info JSON and its issuer chain."""
        return self.source.fetch(tdx_tcb_info(fmspc))

    def tdx_qe_identity(self) -> Collateral:
        """TDX QE identity JSON and its issuer chain."""
        return self.source.fetch(tdx_qe_identity())

    def tdx_pck_crl(self, ca: str = "platform") -> Collateral:
        """PCK CRL (DER) and its issuer chain."""
        return self.source.fetch(tdx_pck_crl(ca))

    def root_crl(self) -> bytes:
        """Intel SGX Root CA CRL (DER)."""
        return self.source.fetch(root_crl()).body
