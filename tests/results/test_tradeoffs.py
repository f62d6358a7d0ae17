"""Accuracy against size and latency: the Pareto fronts and the best trial within a budget."""

from __future__ import annotations

import datetime as dt

import optuna
from optuna.trial import TrialState

from mnist_sweep.results.tradeoffs import best_within, cost_figure, pareto_front, within_budget


def _trial(number: int, value: float | None, n_params: int | None, latency: float | None,
           state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    attrs = {k: v for k, v in (("n_params", n_params), ("latency_ms_batch1", latency),
                               ("seconds_per_epoch", 1.0)) if v is not None}
    now = dt.datetime(2026, 1, 1)
    return optuna.trial.FrozenTrial(
        number=number, state=state, value=value if state == TrialState.COMPLETE else None,
        datetime_start=now, datetime_complete=now, params={}, distributions={}, user_attrs=attrs,
        system_attrs={}, intermediate_values={1: value} if value is not None else {}, trial_id=number)


TRIALS = [
    _trial(0, 0.990, 1_000_000, 0.50),
    _trial(1, 0.980, 100_000, 0.40),
    _trial(2, 0.970, 50_000, 0.10),
    _trial(3, 0.960, 200_000, 0.30),   # beaten on both costs by trial 1
    _trial(4, 0.995, 3_000_000, 0.90),
    _trial(5, 0.999, 10, 0.01, state=TrialState.PRUNED),  # pruned: never on a front, never chosen
    _trial(6, 0.985, None, None),  # recorded no costs (an older study)
]


def test_the_front_is_every_trial_no_other_beats_on_both() -> None:
    assert [t.number for t in pareto_front(TRIALS, "n_params")] == [2, 1, 0, 4]
    assert [t.number for t in pareto_front(TRIALS, "latency_ms_batch1")] == [2, 1, 0, 4]
    tie = [_trial(0, 0.98, 100, 1.0), _trial(1, 0.98, 100, 1.0), _trial(2, 0.98, 90, 1.0)]
    assert [t.number for t in pareto_front(tie, "n_params")] == [2]  # as accurate and smaller


def test_the_best_within_a_budget_is_the_most_accurate_that_fits() -> None:
    assert best_within(TRIALS, max_params=150_000).number == 1
    assert best_within(TRIALS, max_latency_ms=0.2).number == 2
    assert best_within(TRIALS, max_params=150_000, max_latency_ms=0.2).number == 2
    assert best_within(TRIALS, max_params=10) is None  # the pruned trial does not count
    assert [t.number for t in within_budget(TRIALS)] == [4, 0, 6, 1, 2, 3]  # no budget: every COMPLETE one


def test_the_cost_figure_draws_both_fronts() -> None:
    fig = cost_figure(TRIALS)
    fronts = [trace for trace in fig.data if trace.name == "Pareto front"]
    assert len(fronts) == 2 and list(fronts[0].customdata) == [2, 1, 0, 4]
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    assert cost_figure([_trial(0, 0.9, None, None)]) == "No trial recorded its parameter count."
