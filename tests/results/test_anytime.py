"""The anytime curve and the time to a threshold, on trials whose clocks the test sets."""

from __future__ import annotations

import datetime as dt

import optuna
import pytest

from mnist_sweep.results.anytime import best_so_far, first_crossing, first_reach


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


def test_best_so_far_merges_overlapping_trials_in_time_order() -> None:
    # two workers: trial 1 starts while trial 0 trains, and its second epoch beats trial 0's third
    trials = _trials(_trial(0, 0.0, [0.5, 0.6, 0.7], epoch_s=2.0), _trial(1, 1.0, [0.55, 0.9], epoch_s=1.0))
    curve = best_so_far(trials)
    # trial 0 epochs end at 2.5, 4.5, 6.5 s; trial 1's at 2.5 and 3.5 s (started 1 s later, 0.5 s set-up)
    assert [(p.seconds, p.value, p.trial, p.epoch) for p in curve] == [
        (2.5, 0.5, 0, 1), (2.5, 0.55, 1, 1), (3.5, 0.9, 1, 2)]
    assert first_reach(curve, 0.6) == pytest.approx(3.5)
    assert first_reach(curve, 0.95) is None


def test_trials_without_epoch_times_are_left_out() -> None:
    (interrupted,) = _trials(_trial(0, 0.0, [0.8]))
    interrupted.user_attrs.pop("epoch_seconds")
    assert best_so_far([interrupted]) == [] and best_so_far([]) == []
    origin = dt.datetime(2025, 12, 31, 23, 59, 50)  # 10 s before the trial: start-up time counts
    (trial,) = _trials(_trial(0, 0.0, [0.8], epoch_s=1.0, setup_s=0.5))
    assert best_so_far([trial], origin=origin)[0].seconds == pytest.approx(11.5)
