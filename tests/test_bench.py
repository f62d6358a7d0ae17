"""The bench's arithmetic (not its timings: benchmarks print figures, they are not timed tests)."""

from __future__ import annotations

import pytest

from mnist_sweep.bench import TARGETS, format_table
from mnist_sweep.flops import flop_bound_epoch_s, inference_flops_per_image, training_flops_per_image
from mnist_sweep.model import TUTORIAL_MODELS


def test_flops_of_the_tutorial_model_4() -> None:
    # 668,672 multiply-accumulates: 1.34 MFLOP forward, 3.21 MFLOP forward + backward per image.
    params = TUTORIAL_MODELS[3]
    assert inference_flops_per_image(params) == 2 * 668_672
    assert training_flops_per_image(params) == pytest.approx(3.209e6, rel=1e-3)
    # 48,000 training and 12,000 validation images at 170 GFLOP/s: just under one second
    assert flop_bound_epoch_s(params, 48000, 12000, 170.0) == pytest.approx(1.0, rel=0.02)


def test_table_marks_missed_targets() -> None:
    table = format_table({"epoch_speedup_vs_tutorial": 2.0, "epoch_vs_flop_bound": 1.9})
    assert "epoch_speedup_vs_tutorial" in table and "yes" in table.splitlines()[1]
    assert "NO" in table.splitlines()[2]
    assert len(table.splitlines()) >= len(TARGETS) + 1
