"""Intel TDX quote verification (DCAP, ECDSA P-256): quote parser, collateral, verifier."""
