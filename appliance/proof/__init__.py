"""Proofs of results: what a node exports for one result and the offline checks a user runs."""
