"""The sweep loop: run trials on a study until it holds the sweep's target of finished trials.

A sweep's target is a total held in the storage, not a per-call ``n_trials``: each worker checks
the count in the storage before every trial, so several workers share a study (Optuna's own
distributed mode) and a resumed sweep runs only what is missing. The loop hands each trial its
budget (:class:`TrialBudget`) and gets its outcome back (:class:`TrialOutcome`); it stops on a
fatal outcome, on ``max_consecutive_failures`` crashes in a row, at the sweep's ``hard_timeout``,
or when ``should_stop`` says so. Then it runs winner confirmation, when the sweep asks for it.
With ``pack: {members: K}`` above 1 it asks up to K trials at a time and trains those of one
structure as one program (:mod:`mnist_sweep.search.packs`); each is still one outcome.

Example:
    >>> study = run_sweep(load_sweep("quick"), "sqlite:///studies/mnist_sweep.db")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from mnist_sweep.data.dataset import Dataset, load_dataset
from mnist_sweep.errors import SweepFailed
from mnist_sweep.model.packed import packs_on_accelerator
from mnist_sweep.search.confirmation import CONFIRMS_ATTR, enqueue_confirmations, waiting_confirmations
from mnist_sweep.search.objective import Objective
from mnist_sweep.search.outcomes import (
    Failure,
    TrialBudget,
    TrialEpochHook,
    TrialOutcome,
    failed_by_another_worker,
    never,
    storage_error_in,
)
from mnist_sweep.search.packs import run_pack
from mnist_sweep.search.samplers import make_sampler
from mnist_sweep.search.study import DONE_STATES, count_states, open_study
from mnist_sweep.storage.rdb import open_storage, reap_dead_trials
from mnist_sweep.sweep.config import SweepConfig

MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class LoopOptions:
    """How a caller watches and steers the sweep loop (:func:`run_sweep`); every field is optional.

    Args:
        worker: this worker's index when several share the study (offsets the sampler seed).
        should_stop: asked before each trial and after each epoch; ``True`` ends the loop and
            interrupts the running trial (e.g. a signal was received).
        on_trial: called after each finished trial (the progress line).
        on_open: called with the study once it is created or resumed (a refused resume calls nothing).
        on_start: called as each trial starts.
        on_epoch: called after each epoch with (trial, epoch index, epochs planned, metrics).
        provenance: recorded on the study when this call creates it.
        max_consecutive_failures: this many trials failing in a row (not pruned: crashed) stop the
            run, since a bug that fails every trial would otherwise burn the whole target.
    """

    worker: int = 0
    should_stop: Callable[[], bool] = never
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None
    on_open: Callable[[optuna.Study], None] | None = None
    on_start: Callable[[optuna.Trial], None] | None = None
    on_epoch: TrialEpochHook | None = None
    provenance: Mapping[str, Any] | None = None
    max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES


@dataclass
class _Streak:
    """The loop's count of trials that failed one after another (a trial that finishes or is pruned
    ends it; surplus and interrupted trials do not count) and the first failure of the last streak.
    The members of a pack that one error failed together (their program crashed or timed out) count
    as one failure, as one trial would: a pack of 8 does not end the run for one timeout."""

    in_a_row: int = 0
    first: Failure | None = None
    last_error: BaseException | None = None

    def add(self, outcome: TrialOutcome) -> None:
        if outcome.state in ("complete", "pruned"):
            self.in_a_row = 0
        elif outcome.state == "failed":
            if self.in_a_row and outcome.error is self.last_error:
                return
            if self.in_a_row == 0:
                self.first = outcome.failure
            self.in_a_row += 1
            self.last_error = outcome.error


def run_sweep(
    sweep: SweepConfig,
    storage: str,
    study_name: str | None = None,
    dataset: Dataset | None = None,
    heartbeat: bool = True,
    options: LoopOptions = LoopOptions(),  # noqa: B008 - frozen: one shared default is safe
) -> optuna.Study:
    """The sweep loop: run (or resume) ``sweep`` until its study holds ``sweep.trials`` COMPLETE +
    PRUNED trials. :func:`mnist_sweep.run` wraps it with everything a process needs around it
    (backend, progress, signals, parallel workers); call that unless you are a worker.

    Everything that can be wrong with the input (sampler, data) is checked before the storage is
    touched. Stops early at ``sweep.timeout`` seconds.

    Args:
        sweep: the validated sweep.
        storage: an RDB URL (see :func:`mnist_sweep._base.paths.storage_url`).
        study_name: default: ``sweep.name``.
        dataset: already loaded data; default: loaded here once, as ``sweep.data`` says.
        heartbeat: send Optuna heartbeats so a dead worker's trial is failed and retried. Without
            them a RUNNING trial of another process may be dead, so this loop does not wait for it.
        options: the worker's index, hooks, stop request, provenance and failure limit (:class:`LoopOptions`).

    Raises:
        SweepFailed: ``options.max_consecutive_failures`` trials failed in a row; it carries the
            first one's traceback.
    """
    make_sampler(sweep)
    dataset = dataset if dataset is not None else load_dataset(sweep.data)
    rdb = open_storage(storage, sweep.heartbeat if heartbeat else None, retry_seconds=sweep.storage_retry.seconds)
    study = open_study(sweep, rdb, study_name, options.worker, options.provenance, dataset.signature)
    if options.on_open is not None:
        options.on_open(study)
    reap_dead_trials(study, rdb)  # Optuna reaps only when a trial starts; reap at start-up too
    objective = Objective(sweep, dataset, on_start=options.on_start, should_stop=options.should_stop,
                          on_epoch=options.on_epoch, worker=options.worker)
    on_trial = options.on_trial
    callbacks = [lambda s, t: on_trial(s, t)] if on_trial else []
    deadline = time.monotonic() + sweep.hard_timeout if sweep.hard_timeout is not None else None
    budget = TrialBudget(deadline, target_trials=sweep.trials)
    streak = _Streak()
    members = sweep.pack.on_device(packs_on_accelerator())

    def trials(budget: TrialBudget, room: int = 1) -> None:
        """One trial, or a pack of up to ``room`` (the trials the target still lacks)."""
        if members > 1 and room > 1:
            outcomes = run_pack(study, objective, budget, callbacks, min(room, members))
        else:
            outcome = _optimize_one(study, objective, budget, callbacks)
            outcomes = [outcome] if outcome is not None else []
        for outcome in outcomes:
            _check_outcome(study, outcome, streak, options.max_consecutive_failures)

    _search(study, rdb, sweep, budget, heartbeat, options.should_stop, trials)
    if sweep.confirm.top and not options.should_stop() and not budget.expired():
        enqueue_confirmations(study, sweep.confirm.top, sweep.confirm.seeds)
        confirming = TrialBudget(deadline)  # the re-runs count beyond the sweep's trials
        while waiting_confirmations(study) and not options.should_stop() and not confirming.expired():
            trials(confirming)
    reap_dead_trials(study, rdb)
    if not study.get_trials(deepcopy=False, states=DONE_STATES) and not options.should_stop():
        first = streak.first
        why = f"; the first failure, trial {first.trial}: {first.reason}" if first else ""
        raise SweepFailed(f"study '{study.study_name}': no trial finished{why}", first.traceback if first else "")
    return study


def _search(study: optuna.Study, rdb: Any, sweep: SweepConfig, budget: TrialBudget, heartbeat: bool,
            should_stop: Callable[[], bool], trials: Callable[[TrialBudget, int], None]) -> None:
    """Run trials until the study holds ``sweep.trials`` finished ones, the timeout passes or a stop is asked;
    ``trials`` runs one trial or a pack of as many as the target still lacks."""
    started = time.monotonic()
    while not budget.expired():
        counts = count_states(study)
        done = sum(counts[s.name] for s in DONE_STATES) - _confirmations_done(study)
        if done >= sweep.trials:
            break
        if sweep.timeout is not None and time.monotonic() - started >= sweep.timeout:
            break
        if should_stop():
            break
        if done + counts["RUNNING"] >= sweep.trials:
            if not heartbeat:
                break
            time.sleep(min(2.0, sweep.heartbeat.interval))  # others are finishing the target; a failure
            reap_dead_trials(study, rdb)  # there (or a dead worker's trial) is ours to replace
            continue
        trials(budget, sweep.trials - done - counts["RUNNING"])


def _optimize_one(study: optuna.Study, objective: Objective, budget: TrialBudget, callbacks: list[Any]
                  ) -> TrialOutcome | None:
    """One trial through ``study.optimize``; returns its outcome (None if the objective never ran).
    A storage that gave up (or a full disk) stops the run with its one line, from under whatever
    Optuna raised on the way out (optuna#5280); a trial that another worker failed while this one
    could not reach the storage is let go."""
    ran: list[int] = []
    outcomes: list[TrialOutcome] = []

    def trial_within_budget(trial: optuna.Trial) -> float | tuple[float, ...]:
        ran.append(trial.number)
        outcomes.append(objective.run_trial(trial, budget))
        return outcomes[-1].result()

    try:
        study.optimize(trial_within_budget, n_trials=1, catch=(Exception,), callbacks=callbacks,
                       gc_after_trial=False)
    except Exception as err:  # noqa: BLE001 - re-raised unless it is one of the two cases above
        unavailable = (outcomes[-1].fatal if outcomes else None) or storage_error_in(err)
        if unavailable is not None:
            raise unavailable from None
        if not failed_by_another_worker(err, ran[-1] if ran else None):
            raise
    return outcomes[-1] if outcomes else None


def _check_outcome(study: optuna.Study, outcome: TrialOutcome, streak: _Streak, max_consecutive_failures: int
                   ) -> None:
    """Stop the run on a fatal outcome, or when trials keep failing (:class:`SweepFailed`)."""
    if outcome.fatal is not None:
        raise outcome.fatal
    streak.add(outcome)
    if streak.in_a_row >= max_consecutive_failures:
        first = streak.first
        assert first is not None
        raise SweepFailed(f"study '{study.study_name}': {streak.in_a_row} trials failed in a row, "
                          f"stopping (the first, trial {first.trial}: {first.reason})", first.traceback)


def _confirmations_done(study: optuna.Study) -> int:
    """Finished re-runs of winner confirmation: they do not count towards ``trials``."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=DONE_STATES) if CONFIRMS_ATTR in t.user_attrs)
