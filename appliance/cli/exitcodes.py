"""Process exit codes, mapped from the error trees (appliance and attestation) in one place."""

from __future__ import annotations

from appliance.errors import ConfigError, UsageError
from attestation.errors import CollateralError, PolicyError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus keys on it


def exit_code_for(exc: BaseException) -> int:
    """Exit code for an error that reached the top of a command."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, UsageError | PolicyError | CollateralError | OSError | ValueError):
        return EXIT_USAGE
    return EXIT_FAILED
