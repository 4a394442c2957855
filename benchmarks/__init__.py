"""Benchmarks whose figures go to BENCHMARKS.md (throughput, prediction memory, MRC speed)."""
