"""FLOP arithmetic of the MLPs, and the float32 rate this machine reaches on their matrix products.

``bench`` divides a model's training FLOPs by the measured rate to get the shortest possible
epoch (the FLOP bound) that our trainer is compared against.

Example:
    >>> training_flops_per_image({"hidden_layers": 2, "units": 512})   # the tutorial's model 4
    3209216
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from mnist_sweep.model.costs import forward_macs, training_flops_per_image  # noqa: F401 - re-exported
from mnist_sweep.model.factory import layer_widths


def dense_macs(params: Mapping[str, Any]) -> list[int]:
    """Multiply-accumulates of each Dense layer for one image (an MLP on 28 x 28 MNIST)."""
    return forward_macs(params)


def inference_flops_per_image(params: Mapping[str, Any]) -> float:
    return 2.0 * sum(dense_macs(params))


def sgemm_gflops(params: Mapping[str, Any], batch_size: int = 128, repeats: int = 20) -> float:
    """float32 GFLOP/s numpy reaches here on the model's own matrix products for one training step.

    Those are, per Dense layer (in -> out) and batch B: the forward (B x in)(in x out), the weight
    gradient (in x B)(B x out) and the input gradient (B x out)(out x in). A big square sgemm runs
    faster (see :func:`peak_sgemm_gflops`), but no batch-128 step can reach that rate.
    """
    rng = np.random.default_rng(0)
    widths = [784, *layer_widths(params), 10]
    shapes = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:], strict=False)):
        shapes += [(batch_size, n_in, n_out), (n_in, batch_size, n_out)]
        if i > 0:
            shapes.append((batch_size, n_out, n_in))
    pairs = [(rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for a, b in pairs:
            a @ b
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def peak_sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 rate of a large square matrix product (the machine's peak, for reference)."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    best = math.inf
    for _ in range(repeats + 1):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def flop_bound_epoch_s(params: Mapping[str, Any], n_train: int, n_val: int, gflops: float) -> float:
    """The shortest possible epoch at ``gflops``: training plus validation FLOPs."""
    flops = training_flops_per_image(params) * n_train + inference_flops_per_image(params) * n_val
    return flops / (gflops * 1e9)
