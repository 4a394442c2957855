"""Benchmarks the ``mnerqg`` command runs (``mnerqg bench``), installed with the package.

The other benchmarks, whose figures go to BENCHMARKS.md, live in the checkout's ``benchmarks/``.
"""
