"""Benchmarks (not part of the test suite): `make bench`, see benchmarks/bench.py."""
