"""The bench's arithmetic (not its timings: benchmarks print figures, they are not timed tests)."""

from __future__ import annotations

import pytest

from mnist_sweep.bench.flops import flop_bound_epoch_s, inference_flops_per_image, training_flops_per_image
from mnist_sweep.bench.suite import TARGETS, format_table
from mnist_sweep.model.factory import TUTORIAL_MODELS


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


@pytest.mark.slow
def test_augmentation_probe_alternates_plain_and_augmented_epochs() -> None:
    # the bench's augmentation cost comes from this probe: both models' epochs in one process
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mnist_sweep.bench._epoch_probe", "augmentation", "--epochs", "3"],
                         capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(figures["epoch_seconds"]) == len(figures["augmented_epoch_seconds"]) == 3
    plain, augmented = figures["epoch_seconds"], figures["augmented_epoch_seconds"]
    assert figures["pair_ratios"] == [augmented[1] / plain[1], augmented[2] / plain[2]]
    assert figures["epoch_s"] == min(figures["epoch_seconds"][1:])
    assert figures["augmented_epoch_s"] == min(figures["augmented_epoch_seconds"][1:])
    assert 0 < figures["epoch_s"] < 60 and 0 < figures["augmented_epoch_s"] < 60


def test_pair_ratios_leave_out_the_compiling_pair() -> None:
    from mnist_sweep.bench._epoch_probe import pair_ratios

    seconds = {"epoch_seconds": [9.0, 1.0, 2.0], "augmented_epoch_seconds": [12.0, 1.1, 2.4]}
    assert pair_ratios(seconds) == pytest.approx([1.1, 1.2])
