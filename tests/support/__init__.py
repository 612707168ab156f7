"""Helpers shared by the test suite (paths to vectors, reference tools, real modules)."""
