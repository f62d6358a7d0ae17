"""What a sweep optimises: validation accuracy, and optionally costs minimised beside it.

A sweep's ``objectives`` list starts with ``val_accuracy`` (maximised); ``n_params`` and
``latency_ms_batch1`` (minimised) may follow, and then the study is an Optuna multi-objective
study whose result is a Pareto front, not one best trial. Pruning does not apply there: Optuna's
pruners compare one objective's intermediate values, and ``Trial.report`` refuses multi-objective
studies, so such a sweep runs every trial to its last epoch (its ``pruner`` must be ``none``).

Everything that ranks trials (export, ``final``, the report, progress lines) ranks them by
validation accuracy, the first objective, through :func:`accuracy_of` and :func:`best_trial`.

Example:
    >>> directions(["val_accuracy", "n_params"])
    ['maximize', 'minimize']
    >>> best_trial(study).number
    12
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import optuna
from optuna.trial import FrozenTrial, TrialState

ObjectiveName = Literal["val_accuracy", "n_params", "latency_ms_batch1"]
OBJECTIVES: tuple[str, ...] = get_args(ObjectiveName)
ACCURACY = "val_accuracy"


def directions(objectives: Sequence[str]) -> list[str]:
    """Optuna's direction of each objective: accuracy is maximised, costs minimised."""
    return ["maximize" if name == ACCURACY else "minimize" for name in objectives]


def is_multi_objective(study: optuna.Study) -> bool:
    """Whether ``study`` optimises more than one objective."""
    return len(study.directions) > 1


def accuracy_of(trial: FrozenTrial) -> float | None:
    """The trial's validation accuracy (its first objective), or None when it has no value."""
    return float(trial.values[0]) if trial.values else None


def best_trial(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The COMPLETE trial with the best validation accuracy (the lower number on a tie), or None;
    in a single-objective study that is Optuna's ``best_trial``. ``trials``: the study's, already read."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trials is None else trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    return max(complete, key=lambda t: (accuracy_of(t), -t.number), default=None)
