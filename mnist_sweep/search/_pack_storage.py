"""A pack's storage traffic each epoch: every member's report in one write, the pruner's reads in one.

Trial by trial, an epoch costs each member a write (``trial.report``) and, where it may be
pruned, reads: ``trial.should_prune()`` reads the trial, and the pruner the study's trials, every
RUNNING one again (Optuna's cache keeps only finished trials). K members asking in turn make that
K x K trial reads a pack-epoch: 0.34-0.54 s for K = 64 on SQLite here, more than a model-4
pack-epoch takes on a GPU (about 0.25 s). A pack-epoch here is one multi-row ``INSERT`` of every
member's value (0.5 ms for 64) and, when a member may be pruned, one read of the study (7 ms with
64 running trials), which the pruner then consults for each member in turn, as it would for that
many workers reporting at the same moment.

Example:
    >>> epoch = PackEpochStorage(study)
    >>> epoch.report([(trial_a, 3, 0.97), (trial_b, 3, 0.95)])
    >>> epoch.should_prune(trial_b)
    False
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_sweep.storage._optuna_internals import report_together


class PackEpochStorage:
    """The storage side of a pack's epochs: :meth:`report` writes the epoch's values, :meth:`should_prune`
    asks the pruner from one read of the study taken after them."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._view: _StudyView | None = None

    def report(self, reports: Sequence[tuple[optuna.Trial, int, float]]) -> None:
        """The members' (trial, step, value) of one epoch, in one write."""
        report_together(self.study, reports)
        self._view = None

    def should_prune(self, trial: optuna.Trial) -> bool:
        """``trial.should_prune()``, from the study as one read after the last :meth:`report` left it."""
        if self._view is None:
            self._view = _StudyView(self.study)
        return self.study.pruner.prune(self._view, self._view.trial(trial.number))  # type: ignore[arg-type]


class _StudyView:
    """The study as one read left it: its trials from that read, everything else the study's own (a
    pruner that writes, such as successive halving's rungs, writes to the study's storage)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._trials = study.get_trials(deepcopy=False)
        self._by_number = {t.number: t for t in self._trials}

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def trial(self, number: int) -> FrozenTrial:
        return self._by_number[number]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
