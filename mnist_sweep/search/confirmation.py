"""Winner confirmation: the top configs re-run with other seeds, ranked on their mean.

One validation split cannot separate 0.9878 from 0.9876: the spread between seeds of one config
is larger than that. With ``confirm: {top: N, seeds: M}`` a sweep, once its search has ended (its
``trials`` reached or its ``timeout`` passed, not on an interrupt), re-runs each of its N best
distinct configs M more times. A re-run is an ordinary enqueued trial (never pruned, kept like
any other) with its own seed (the sweep's seed plus its trial number) and the user attribute
``confirms`` naming the trial it repeats; re-runs count beyond ``trials``.

A config's score is then the mean validation accuracy of its runs. The confirmed configs come
first, by that mean; the unconfirmed ones follow by their one value (ranking a lucky single run
above a confirmed mean would undo the point). ``export`` and ``final`` follow this order; the
report draws each confirmed config's runs with their mean and spread. Resuming a study whose
search is done enqueues only the missing re-runs, so ``run`` again after distributed ``worker``
processes finish is how a distributed sweep gets confirmed (from one process).

Example:
    >>> [(g.trial, g.runs, round(g.mean, 4)) for g in config_groups(study.trials)][:2]
    [(7, 3, 0.9921), (12, 3, 0.9917)]
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_sweep.storage._queue import enqueue_once
from mnist_sweep.sweep.goals import accuracy_of

CONFIRMS_ATTR = "confirms"


@dataclass(frozen=True)
class ConfigGroup:
    """One config's COMPLETE runs: the original trial and its confirmation re-runs."""

    trial: int  # the original
    values: tuple[float, ...]  # validation accuracy of each run, the original first
    numbers: tuple[int, ...]  # the runs' trial numbers

    @property
    def runs(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def config_groups(trials: Sequence[FrozenTrial]) -> list[ConfigGroup]:
    """COMPLETE trials grouped by the config they run, best first (confirmed ones by mean first)."""
    runs: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        if trial.state == TrialState.COMPLETE and trial.values:
            runs.setdefault(int(trial.user_attrs.get(CONFIRMS_ATTR, trial.number)), []).append(trial)
    groups = [ConfigGroup(original, tuple(accuracy_of(t) for t in members), tuple(t.number for t in members))
              for original, members in ((o, sorted(m, key=lambda t: (t.number != o, t.number)))
                                        for o, m in runs.items())]
    return sorted(groups, key=lambda g: (g.runs == 1, -g.mean, g.trial))


def chosen_trial(study: optuna.Study) -> FrozenTrial | None:
    """The trial whose config ranks first (its original run), or None without a COMPLETE trial; without
    re-runs that is the most accurate trial."""
    groups = config_groups(study.get_trials(deepcopy=False))
    return study.trials[groups[0].trial] if groups else None


def trial_rank(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Each COMPLETE trial's rank (0 best) in the confirmed order: its group's place, then its own value."""
    order: dict[int, int] = {}
    values = {t.number: accuracy_of(t) for t in trials if t.state == TrialState.COMPLETE and t.values}
    for group in config_groups(trials):
        for number in sorted(group.numbers, key=lambda n: (-values[n], n)):
            order[number] = len(order)
    return order


def enqueue_confirmations(study: optuna.Study, top: int, seeds: int) -> int:
    """Queue the re-runs the ``top`` best configs still miss (``seeds`` each); returns how many it queued."""
    if top <= 0 or seeds <= 0:
        return 0
    trials = study.get_trials(deepcopy=False)
    originals = [g.trial for g in sorted(config_groups([t for t in trials if CONFIRMS_ATTR not in t.user_attrs]),
                                         key=lambda g: (-g.mean, g.trial))][:top]
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    queued = 0
    for original in originals:
        runs = [t for t in trials if t.user_attrs.get(CONFIRMS_ATTR) == original]
        have = sum(1 for t in runs if t.state in live)
        for n in range(len(runs), len(runs) + seeds - have):  # keyed: workers that read the same trials queue once
            enqueue_once(study, f"confirm:{original}:{n}", trials[original].params, {CONFIRMS_ATTR: original})
            queued += 1
    return queued


def waiting_confirmations(study: optuna.Study) -> int:
    """Re-runs queued and not yet started."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if CONFIRMS_ATTR in t.user_attrs)


