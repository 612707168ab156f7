"""ao-appliance: one hardened AO node (SU + CU + MU) signing results under an attested key."""

__version__ = "0.1.0"
