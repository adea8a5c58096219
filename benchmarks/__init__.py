"""sonicsse benchmarks: decoder micro-benchmarks, the end-to-end runner and the concurrency run.

Run ``python -m benchmarks.e2e --help`` and ``python -m benchmarks.concurrency --help`` from the
repository root; see ``benchmarks/README.md``.
"""
