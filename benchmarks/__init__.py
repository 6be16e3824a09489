"""The benchmarks behind BENCHMARKS.md, each run as ``python -m benchmarks.NAME`` from the repository root."""
