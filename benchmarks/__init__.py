"""Command-line benchmarks: run with ``python -m benchmarks.<name>``."""
