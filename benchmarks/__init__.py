"""Benchmarks of the proxy path: ``python -m benchmarks --quick`` (see README.md, RESULTS.md)."""
