"""Studies: create or resume a sweep's study, load stored ones, and the sweep loop.

A sweep's target is a total held in the storage, not a per-call ``n_trials``: ``trials: 20``
means the study should end with 20 COMPLETE + PRUNED trials. Running the sweep again resumes
it and runs only what is missing; FAILed trials (crashes, interrupts, dead workers) do not count,
so they are replaced. Several workers can share a study (Optuna's own distributed mode: one RDB
storage); each checks the count in the storage before every trial.

The study keeps the sweep (``sweep``), its fingerprint (search space, data, direction) and its
provenance in its user attributes (with each data split's sha256, image and class counts);
resuming it with a different fingerprint, or on data whose content changed, is refused.

Example:
    >>> study = run_sweep(load_sweep("quick"), "sqlite:///studies/mnist_sweep.db")
    >>> load_study("sqlite:///studies/mnist_sweep.db", "quick").best_value
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_sweep._base.paths import storage_url
from mnist_sweep._base.provenance import check_same_data
from mnist_sweep.data.dataset import Dataset, load_dataset
from mnist_sweep.errors import InputError, StorageUnavailable, SweepFailed
from mnist_sweep.search.confirmation import CONFIRMS_ATTR, enqueue_confirmations, waiting_confirmations
from mnist_sweep.search.objective import Failure, Objective, TrialBudget, TrialEpochHook, TrialOutcome, never
from mnist_sweep.search.samplers import make_pruner, make_sampler
from mnist_sweep.storage.rdb import open_storage, reap_dead_trials, redact
from mnist_sweep.sweep.config import SweepConfig
from mnist_sweep.sweep.goals import accuracy_of, best_trial, directions

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 3


def open_study(
    sweep: SweepConfig, storage: str | optuna.storages.BaseStorage, study_name: str | None = None, worker: int = 0,
    provenance: Mapping[str, Any] | None = None, data_signature: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Create the sweep's study (enqueueing its ``enqueue:`` trials, recording ``provenance`` and the
    data's image size and class names) or resume it.

    ``provenance`` (:func:`mnist_sweep._base.provenance.collect`) identifies the data by content: each
    split's sha256, image count and class counts. A study is resumed only on the data it recorded.

    Raises:
        InputError: the stored study was made from a different search space or data (another
            image size or other classes too, or other images: one line naming what changed);
            nothing was written.
    """
    name = study_name or sweep.name
    sampler, pruner = make_sampler(sweep, worker), make_pruner(sweep)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions(sweep.objectives),
                                    sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
        _check_resumable(study, sweep)
        stored = study.user_attrs.get("data_signature")
        if data_signature is not None and stored is not None and stored != dict(data_signature):
            raise InputError(f"study '{study.study_name}' was made on other data ({_shape(stored)}, now "
                             f"{_shape(data_signature)}); use --study NEW or --new-study") from None
        if provenance is not None:
            check_same_data(study.user_attrs.get("provenance"), provenance, study.study_name,
                            "resuming would mix trials trained on other images: restore the data, or use "
                            "--study NEW or --new-study")
        return study
    study.set_user_attr("sweep_fingerprint", sweep.fingerprint())
    study.set_user_attr("sweep", sweep.model_dump(mode="json"))
    if data_signature is not None:
        study.set_user_attr("data_signature", dict(data_signature))
    if provenance is not None:
        study.set_user_attr("provenance", dict(provenance))
    for params in sweep.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    return study


def _shape(signature: Mapping[str, Any]) -> str:
    names = list(signature.get("class_names", []))
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{signature.get('side')} x {signature.get('side')} images, classes {shown}"


def _check_resumable(study: optuna.Study, sweep: SweepConfig) -> None:
    stored_directions = [d.name.lower() for d in study.directions]
    if stored_directions != directions(sweep.objectives):
        raise InputError(f"study '{study.study_name}': stored directions are {stored_directions}, the sweep's "
                         f"objectives {sweep.objectives} want {directions(sweep.objectives)}; "
                         "use --study NEW or --new-study")
    stored = study.user_attrs.get("sweep_fingerprint")
    if stored is not None and stored != sweep.fingerprint():
        old = study.user_attrs.get("sweep", {})
        changed = [k for k in ("space", "data") if old.get(k) != sweep.model_dump(mode="json")[k]]
        raise InputError(
            f"study '{study.study_name}' was made from a different sweep ({' and '.join(changed) or 'space'} "
            "changed); resuming would mix incomparable trials: use --study NEW or --new-study"
        )


def count_states(study: optuna.Study) -> Counter[str]:
    """Number of trials per state name, read from the storage."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def list_studies(storage: str | None = None) -> list[optuna.study.StudySummary]:
    """Summaries (name, trial count, best trial) of the studies in a storage, creating nothing.

    ``storage`` defaults to :func:`mnist_sweep._base.paths.storage_url`.

    Example:
        >>> [s.study_name for s in list_studies()]
        ['quick', 'tutorial']

    Raises:
        InputError: the storage does not exist or cannot be opened.
    """
    rdb = open_storage(storage_url(storage), create=False)
    return sorted(optuna.get_all_study_summaries(rdb, include_best_trial=True), key=lambda s: s.study_name)


def load_study(storage: str | None = None, name: str | None = None) -> optuna.Study:
    """Load a stored study for reading (report, dashboard, export), creating nothing.

    ``storage`` defaults to :func:`mnist_sweep._base.paths.storage_url`; ``name`` may be left out when
    the storage holds exactly one study.

    Example:
        >>> load_study("sqlite:///studies/mnist_sweep.db", "quick").best_value

    Raises:
        InputError: the storage does not exist or cannot be opened, it holds no studies, or ``name``
            is missing (several studies) or unknown; the message lists the studies there are.
    """
    url = storage_url(storage)
    rdb = open_storage(url, create=False)
    names = sorted(optuna.get_all_study_names(rdb))
    if not names:
        raise InputError(f"{redact(url)}: no studies yet (start one with: python -m mnist_sweep run quick)")
    if name is None:
        if len(names) > 1:
            raise InputError(f"{redact(url)} holds {len(names)} studies, pick one with --study: {', '.join(names)}")
        name = names[0]
    elif name not in names:
        raise InputError(f"no study '{name}' in {redact(url)}; available: {', '.join(names)}")
    return optuna.load_study(study_name=name, storage=rdb)


@dataclass(frozen=True)
class StudySummary:
    """What ``studies`` prints of one stored study (unlike Optuna's summary, it counts every state).

    ``states``: trials per state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``...);
    ``best_trial``, ``best_accuracy``: the COMPLETE trial with the best validation accuracy, or
    None; ``directions``: ``maximize``/``minimize`` per objective.
    """

    study_name: str
    states: dict[str, int]
    best_trial: int | None
    best_accuracy: float | None
    directions: list[str]


def study_summaries(storage: str | None = None) -> list[StudySummary]:
    """Each study in a storage, by name, with its trials per state and its best trial; creating nothing.

    ``storage`` defaults to :func:`mnist_sweep._base.paths.storage_url`.

    Example:
        >>> [(s.study_name, s.states["COMPLETE"], s.best_accuracy) for s in study_summaries()]
        [('quick', 6, 0.9432)]

    Raises:
        InputError: the storage does not exist or cannot be opened.
    """
    rdb = open_storage(storage_url(storage), create=False)
    summaries = []
    for name in sorted(optuna.get_all_study_names(rdb)):
        study = optuna.load_study(study_name=name, storage=rdb)
        best = best_trial(study)
        summaries.append(StudySummary(
            study_name=name, states=dict(count_states(study)), best_trial=best.number if best else None,
            best_accuracy=accuracy_of(best) if best else None, directions=[d.name.lower() for d in study.directions]))
    return summaries


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
    ends it; surplus and interrupted trials do not count) and the first failure of the last streak."""

    in_a_row: int = 0
    first: Failure | None = None

    def add(self, outcome: TrialOutcome) -> None:
        if outcome.state in ("complete", "pruned"):
            self.in_a_row = 0
        elif outcome.state == "failed":
            if self.in_a_row == 0:
                self.first = outcome.failure
            self.in_a_row += 1


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

    def one_trial(budget: TrialBudget) -> None:
        outcome = _optimize_one(study, objective, budget, callbacks)
        if outcome is not None:
            _check_outcome(study, outcome, streak, options.max_consecutive_failures)

    _search(study, rdb, sweep, budget, heartbeat, options.should_stop, one_trial)
    if sweep.confirm.top and not options.should_stop() and not budget.expired():
        enqueue_confirmations(study, sweep.confirm.top, sweep.confirm.seeds)
        confirming = TrialBudget(deadline)  # the re-runs count beyond the sweep's trials
        while waiting_confirmations(study) and not options.should_stop() and not confirming.expired():
            one_trial(confirming)
    reap_dead_trials(study, rdb)
    if not study.get_trials(deepcopy=False, states=DONE_STATES) and not options.should_stop():
        first = streak.first
        why = f"; the first failure, trial {first.trial}: {first.reason}" if first else ""
        raise SweepFailed(f"study '{study.study_name}': no trial finished{why}", first.traceback if first else "")
    return study


def _search(study: optuna.Study, rdb: Any, sweep: SweepConfig, budget: TrialBudget, heartbeat: bool,
            should_stop: Callable[[], bool], one_trial: Callable[[TrialBudget], None]) -> None:
    """Run trials until the study holds ``sweep.trials`` finished ones, the timeout passes or a stop is asked."""
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
        one_trial(budget)


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
        unavailable = (outcomes[-1].fatal if outcomes else None) or _storage_error_in(err)
        if unavailable is not None:
            raise unavailable from None
        if not _failed_by_another_worker(err, ran[-1] if ran else None):
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


def _chain(err: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and len(links) < 10:
        links.append(link)
        link = link.__cause__ or link.__context__
    return links


def _storage_error_in(err: BaseException) -> StorageUnavailable | None:
    return next((e for e in _chain(err) if isinstance(e, StorageUnavailable)), None)


def _failed_by_another_worker(err: Exception, trial: int | None) -> bool:
    """Optuna's ``Cannot tell a FAIL trial``: while this worker waited out the storage, another
    failed its trial (number ``trial``) as stale and queued its config again. Nothing is lost: go on."""
    told = [e for e in _chain(err) if isinstance(e, ValueError) and "Cannot tell a" in str(e)]
    if not told or trial is None:  # Optuna raises it, or its "Should not reach" assertion on top of it
        return False
    print(f"warning: trial {trial} was failed by another worker while this one waited for the storage; "
          "its config runs again", file=sys.stderr, flush=True)
    return True


def _confirmations_done(study: optuna.Study) -> int:
    """Finished re-runs of winner confirmation: they do not count towards ``trials``."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=DONE_STATES) if CONFIRMS_ATTR in t.user_attrs)
