"""The performance bench: epoch time against the tutorial and the FLOP bound, pruning, workers,
the storage's cost per trial. Every figure is measured when it runs; each part writes in a
temporary folder of its own, removed when it ends (nothing in the caller's folder or ``studies/``),
except the pruning part's compiled functions, cached where a sweep's are (JAX's compilation cache).
"""

from __future__ import annotations

from mnist_sweep.bench.suite import PARTS, format_table, run_bench

__all__ = [
    "run_bench",
    "format_table",
    "PARTS",
]
