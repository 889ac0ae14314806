"""Benchmarks: `python -m bench` (or `scripts/bench`) prints the figures."""
