"""Pure verification of TEE evidence (SEV-SNP, TDX, emulated) and the providers that collect it.

This package never imports ``appliance``; verification does no I/O.
"""
