"""Benchmarks of the gateway (run with `./dev bench`; results in BENCHMARKS.md)."""
