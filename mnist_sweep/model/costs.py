"""Training FLOPs of the factory's models, from their params alone (no model is built): what a study
spent, set beside what the published results spent (the report's accuracy ladder).

Example:
    >>> training_flops_per_image({"hidden_layers": 2, "units": 512})   # the tutorial's model 4
    3209216
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mnist_sweep.model.factory import layer_widths, resolve_params


def forward_macs(params: Mapping[str, Any], side: int = 28, classes: int = 10) -> list[int]:
    """Multiply-accumulates of each Dense or convolution layer for one image."""
    p = resolve_params(params)
    if p["architecture"] != "cnn":
        widths = [side * side, *layer_widths(p), classes]
        return [a * b for a, b in zip(widths, widths[1:], strict=False)]
    macs, channels, size, kernel = [], 1, side, int(p["kernel_size"])
    for block in range(int(p["conv_blocks"])):
        filters = int(p["filters"]) * 2 ** block
        macs.append(size * size * kernel * kernel * channels * filters)
        size_after = size // 2
        macs.append((size_after if p["pooling"] == "none" else size) ** 2 * kernel * kernel * filters * filters)
        channels, size = filters, size_after
    head = int(p["head_units"])
    return [*macs, size * size * channels * head, head * classes]


def training_flops_per_image(params: Mapping[str, Any], side: int = 28, classes: int = 10) -> float:
    """Forward + backward FLOPs for one training image: forward 2·MACs, weight gradients 2·MACs,
    input gradients 2·MACs for every layer but the first (nothing needs the input's gradient)."""
    macs = forward_macs(params, side, classes)
    return 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])
