"""Benchmarks: runnable scripts that measure migrator against a baseline in one run."""
