"""The performance bench: epoch time against the tutorial and the FLOP bound, pruning, workers,
the storage's cost per trial. Every figure is measured when it runs; nothing is written outside
a temporary folder.
"""

from __future__ import annotations

from mnist_sweep.bench.suite import PARTS, format_table, run_bench

__all__ = [
    "run_bench",
    "format_table",
    "PARTS",
]
