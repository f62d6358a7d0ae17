"""The bench's arithmetic (not its timings: benchmarks print figures, they are not timed tests)."""

from __future__ import annotations

import datetime as dt

import optuna
import pytest

from mnist_sweep.bench import (
    TARGETS,
    first_crossing,
    flop_bound_epoch_s,
    format_table,
    inference_flops_per_image,
    training_flops_per_image,
)
from mnist_sweep.model import TUTORIAL_MODELS


def test_flops_of_the_tutorial_model_4() -> None:
    # 668,672 multiply-accumulates: 1.34 MFLOP forward, 3.21 MFLOP forward + backward per image.
    params = TUTORIAL_MODELS[3]
    assert inference_flops_per_image(params) == 2 * 668_672
    assert training_flops_per_image(params) == pytest.approx(3.209e6, rel=1e-3)
    # 48,000 training and 12,000 validation images at 170 GFLOP/s: just under one second
    assert flop_bound_epoch_s(params, 48000, 12000, 170.0) == pytest.approx(1.0, rel=0.02)


def _trial(number: int, start_s: float, values: list[float], epoch_s: float = 1.0, setup_s: float = 0.5):
    start = dt.datetime(2026, 1, 1) + dt.timedelta(seconds=start_s)
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=max(values),
        intermediate_values={i + 1: v for i, v in enumerate(values)},
        user_attrs={"epoch_seconds": [epoch_s] * len(values)},
    ), start, start + dt.timedelta(seconds=setup_s + epoch_s * len(values)), number


def _trials(*specs):
    out = []
    for t, start, end, number in specs:
        t.datetime_start, t.datetime_complete, t.number = start, end, number
        out.append(t)
    return out


def test_first_crossing_counts_epochs_and_seconds_up_to_the_hit() -> None:
    trials = _trials(_trial(0, 0.0, [0.5, 0.6, 0.7]), _trial(1, 4.0, [0.8, 0.97, 0.99]))
    crossing = first_crossing(trials, 0.95)
    # 3 epochs of trial 0, then 2 of trial 1; trial 1 started at 4 s, set up for 0.5 s, 2 epochs of 1 s
    assert crossing.epochs == 5
    assert crossing.seconds == pytest.approx(6.5)
    assert crossing.trials == 2
    assert first_crossing(trials, 0.999).epochs is None


def test_table_marks_missed_targets() -> None:
    table = format_table({"epoch_speedup_vs_tutorial": 2.0, "epoch_vs_flop_bound": 1.9})
    assert "epoch_speedup_vs_tutorial" in table and "yes" in table.splitlines()[1]
    assert "NO" in table.splitlines()[2]
    assert len(table.splitlines()) >= len(TARGETS) + 1
