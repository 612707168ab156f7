"""The numbered-step recorder every verifier uses: each check either passes (and is listed in
``VerifiedEvidence.steps``) or raises :class:`VerificationFailed` naming its step and spec.
Warnings noted on the way travel with the result and with a rejection alike."""

from __future__ import annotations

from attestation.errors import VerificationFailed


class Steps:
    """Records passed steps and warnings; raises VerificationFailed for the failing step."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        """Note something accepted that a reader should know about (never changes a verdict)."""
        self.warnings.append(message)

    def check(self, ok: bool, step: str, spec: str, reason: str) -> None:
        """Pass ``step`` when ``ok``; otherwise reject at it with ``reason``."""
        if not ok:
            raise VerificationFailed(step, spec, reason, tuple(self.warnings))
        if step not in self.passed:
            self.passed.append(step)
