"""The single error tree of the ``attestation`` package.

Verification raises :class:`VerificationFailed` naming the numbered step (for example ``"SNP-7"``)
and the specification section it implements, so a rejection always says exactly which check failed.
"""

from __future__ import annotations


class AttestationError(Exception):
    """Base of every error raised by ``attestation``."""


class MalformedEvidence(AttestationError):
    """Evidence bytes (report, quote, bundle, certificate, collateral) cannot be parsed."""


class VerificationFailed(AttestationError):
    """A numbered verification step rejected the evidence; ``warnings`` are those noted before."""

    def __init__(self, step: str, spec: str, reason: str,
                 warnings: tuple[str, ...] = ()) -> None:
        super().__init__(f"step {step} ({spec}): {reason}")
        self.step = step
        self.spec = spec
        self.reason = reason
        self.warnings = warnings


class EmulatedEvidenceRefused(VerificationFailed):
    """Emulated evidence was presented to a verifier not told ``allow_emulated=True``."""


class PolicyError(AttestationError):
    """A policy or reference-value file is invalid (message carries file:line:col)."""


class CollateralError(AttestationError):
    """Certificates or collateral needed for verification are missing or unusable."""


class ProviderError(AttestationError):
    """An evidence provider could not obtain evidence from its device or interface."""
