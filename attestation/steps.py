"""The numbered-step recorder every verifier uses: each check either passes (and is listed in
``VerifiedEvidence.steps``) or raises :class:`VerificationFailed` naming its step and spec."""

from __future__ import annotations

from attestation.errors import VerificationFailed


class Steps:
    """Records passed steps and raises VerificationFailed for the failing one."""

    def __init__(self) -> None:
        self.passed: list[str] = []

    def check(self, ok: bool, step: str, spec: str, reason: str) -> None:
        """Pass ``step`` when ``ok``; otherwise reject at it with ``reason``."""
        if not ok:
            raise VerificationFailed(step, spec, reason)
        if step not in self.passed:
            self.passed.append(step)
