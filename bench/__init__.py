"""Benchmarks: every figure is measured next to an anchor in the same run and printed as a ratio."""
