"""AMD SEV-SNP attestation report parsing and offline verification."""
