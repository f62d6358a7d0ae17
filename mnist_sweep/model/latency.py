"""Inference speed of a trained model on this machine: what accuracy costs at deployment.

Every COMPLETE trial records, beside its parameter count, its latency for one image
(``latency_ms_batch1``: the median of repeated single-image calls, milliseconds) and its
throughput on large batches (``images_per_s_batch1024``), both through Keras's
``predict_on_batch`` on the backend the sweep trains on, after a warm-up that compiles.

Example:
    >>> measure_inference(model)
    {'latency_ms_batch1': 0.21, 'images_per_s_batch1024': 98000.0}
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np


def measure_inference(model: Any, single_calls: int = 15, batch_calls: int = 3) -> dict[str, float]:
    """``latency_ms_batch1`` and ``images_per_s_batch1024`` of ``model`` (see the module docstring)."""
    inputs = int(model.input_shape[-1])
    one, many = np.zeros((1, inputs), np.float32), np.zeros((1024, inputs), np.float32)
    model.predict_on_batch(one)  # compiles; not timed
    model.predict_on_batch(many)
    singles = [_seconds(model, one) for _ in range(single_calls)]
    batches = [_seconds(model, many) for _ in range(batch_calls)]
    return {"latency_ms_batch1": round(1000 * statistics.median(singles), 4),
            "images_per_s_batch1024": round(1024 / statistics.median(batches), 1)}


def _seconds(model: Any, x: np.ndarray) -> float:
    start = time.perf_counter()
    np.asarray(model.predict_on_batch(x))  # to NumPy: the result is ready, not just dispatched
    return time.perf_counter() - start
