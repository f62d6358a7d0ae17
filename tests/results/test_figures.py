"""The report's figures read for a reader: accuracy axes over the good trials, outliers still shown."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from mnist_sweep.results.accuracy_axis import CLIPPED_SYMBOL, accuracy_range
from mnist_sweep.results.figures import report_figures

DISTRIBUTIONS = {"units": CategoricalDistribution([64, 128]), "learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
                 "activation": CategoricalDistribution(["relu"])}
GOOD = [0.970, 0.972, 0.975, 0.977, 0.979, 0.981, 0.983, 0.985, 0.988, 0.990]
PRUNED_AT, DIVERGED = 0.35, 0.11  # the planted low outliers: a pruned trial's best epoch, a COMPLETE trial


def _trial(number: int, state: TrialState, value: float) -> optuna.trial.FrozenTrial:
    params = {"units": [64, 128][number % 2], "learning_rate": 10 ** (-4 + 3 * number / 12), "activation": "relu"}
    return create_trial(state=state, value=value if state == TrialState.COMPLETE else None, params=params,
                        distributions=DISTRIBUTIONS, intermediate_values={1: value - 0.05, 2: value})


@pytest.fixture
def study() -> optuna.Study:
    """Ten good COMPLETE trials, one PRUNED at 0.35 (as in a default study), one COMPLETE that diverged."""
    study = optuna.create_study(direction="maximize")
    for i, value in enumerate(GOOD[:5]):
        study.add_trial(_trial(i, TrialState.COMPLETE, value))
    study.add_trial(_trial(5, TrialState.PRUNED, PRUNED_AT))
    study.add_trial(_trial(6, TrialState.COMPLETE, DIVERGED))
    for i, value in enumerate(GOOD[5:], start=7):
        study.add_trial(_trial(i, TrialState.COMPLETE, value))
    return study


def _clipped(fig) -> list:
    return [d for d in fig.data if getattr(d.marker, "symbol", None) == CLIPPED_SYMBOL]


def _check_clipped(fig, low: float, high: float, panels: int) -> None:
    """Both outliers drawn in each panel as triangles on the bottom edge, their true values kept for the hover."""
    clipped = _clipped(fig)
    assert len(clipped) == panels and len({(c.xaxis, c.yaxis) for c in clipped}) == panels
    for trace in clipped:
        assert sorted((row[0], row[1]) for row in trace.customdata) == [(5, PRUNED_AT), (6, DIVERGED)]
        assert all(low < y < low + 0.1 * (high - low) for y in trace.y)
    for trace in fig.data:  # and no other point of a trial falls off the axis
        if getattr(trace, "mode", None) == "markers" and trace not in clipped:
            assert all(y >= low for y in trace.y), trace.name


def test_accuracy_axes_span_the_good_trials_and_clip_the_outliers(study: optuna.Study) -> None:
    low, high = accuracy_range(study.trials)
    assert PRUNED_AT < 0.9 < low < min(GOOD) and max(GOOD) < high < 1.0  # was 0.11 to 1: every good trial on a line
    figures = report_figures(study)
    axes, history = figures["axes"], figures["history"]
    assert [a.range for a in (axes.layout.yaxis, axes.layout.yaxis2)] == [(low, high), (low, high)]
    assert history.layout.yaxis.range == (low, high)
    _check_clipped(axes, low, high, panels=2)  # units and learning_rate; activation is a constant
    _check_clipped(history, low, high, panels=1)
    assert [c.showlegend for c in _clipped(axes)] == [True, False] and "below the axis" in _clipped(axes)[0].name


def test_without_outliers_the_axes_keep_plotlys_own_range(study: optuna.Study) -> None:
    good = optuna.create_study(direction="maximize")
    for i, value in enumerate(GOOD):
        good.add_trial(_trial(i, TrialState.COMPLETE, value))
    assert accuracy_range(good.trials) is None
    figures = report_figures(good)
    assert figures["history"].layout.yaxis.range is None and not _clipped(figures["axes"])


def test_the_importance_panel_says_how_many_trials_it_rests_on(study: optuna.Study) -> None:
    title = report_figures(study)["importance"].layout.title.text
    assert title == "from 11 COMPLETE trials"
