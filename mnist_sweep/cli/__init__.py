"""The command line: parse, call the names :mod:`mnist_sweep` exports, print.
"""

from __future__ import annotations

from mnist_sweep.cli.main import entry, main

__all__ = [
    "main",
    "entry",
]
