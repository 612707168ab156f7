"""Evidence providers (the I/O side of attestation) and the ``auto`` detection that picks one.

``provider_for("auto", ...)`` returns the hardware provider it finds, or ``None`` when this is no
confidential VM; the caller decides whether to fall back to the emulated TEE, loudly.
"""

from __future__ import annotations

from pathlib import Path

from attestation.errors import ProviderError
from attestation.evidence import EvidenceProvider, Platform
from attestation.providers import sev_guest, tdx_guest, tsm
from attestation.providers.emulated import EmulatedProvider

TEE_NAMES = ("auto", "emulated", "sev-snp", "tdx")
_CPUINFO = Path("/proc/cpuinfo")


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def detect(tsm_dir: Path = tsm.TSM_REPORT_DIR, cpuinfo: Path = _CPUINFO,
           sev_device: Path = sev_guest.DEVICE, tdx_device: Path = tdx_guest.DEVICE,
           ) -> Platform | None:
    """Which TEE this guest runs in, from files any user may stat (no root needed)."""
    flags = _cpu_flags(cpuinfo)
    if tdx_device.exists() or "tdx_guest" in flags:
        return Platform.TDX
    if sev_device.exists() or "sev_snp" in flags:
        return Platform.SEV_SNP
    return None


def _hardware(platform: Platform, tsm_dir: Path) -> EvidenceProvider:
    if tsm_dir.is_dir():
        provider = tsm.ConfigfsTsmProvider(tsm_dir)
        if provider.platform is not platform:
            raise ProviderError(
                f"configfs-tsm reports {provider.platform}, but {platform} was asked for")
        return provider
    if platform is Platform.SEV_SNP:
        return sev_guest.SevGuestProvider()
    return tdx_guest.TdxGuestProvider()


def provider_for(tee: str, state_dir: Path, *,
                 tsm_dir: Path = tsm.TSM_REPORT_DIR) -> EvidenceProvider | None:
    """The provider for ``tee`` (one of :data:`TEE_NAMES`); ``None`` when ``auto`` finds none.

    ``state_dir`` holds the emulated TEE's keys. An explicitly named hardware TEE that is not
    present raises :class:`ProviderError`; it never silently becomes emulated.
    """
    if tee not in TEE_NAMES:
        raise ProviderError(f"unknown TEE {tee!r}; expected one of {', '.join(TEE_NAMES)}")
    if tee == "emulated":
        return EmulatedProvider(state_dir)
    if tee == "auto":
        found = detect(tsm_dir)
        return None if found is None else _hardware(found, tsm_dir)
    platform = Platform(tee)
    if detect(tsm_dir) is not platform:
        raise ProviderError(f"--tee {tee} was asked for, but this machine is not a {tee} guest")
    return _hardware(platform, tsm_dir)


__all__ = ["TEE_NAMES", "EmulatedProvider", "detect", "provider_for"]
