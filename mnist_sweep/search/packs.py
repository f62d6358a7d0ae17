"""Packed trials: up to K trials asked at once, those of one structure trained as one program.

With ``pack: {members: K}`` above 1 the sweep loop (:func:`mnist_sweep.search.loop.run_sweep`)
calls :func:`run_pack` in place of one trial through ``study.optimize``. It asks the sampler for a
first trial, then for K-1 more, each queued just before it is asked with the first one's
structural params fixed (those that change :func:`~mnist_sweep.model.packed.pack_key`: layers,
widths, batch size, epochs...; Optuna's partial ``enqueue_trial``): the sampler (TPE) fills in the
others (learning rate, dropout, weight decay...). While the study holds queued trials (the sweep's
``enqueue:``) it takes those, up to K; the grid sampler, which cannot complete a partly fixed
trial, is asked K times. The trials are grouped by pack key: each group of two or more trains as
one :class:`~mnist_sweep.model.packed.PackedTrainer`, a trial alone as without packing.

Every member stays an ordinary Optuna trial, with the steps of
:class:`~mnist_sweep.search.objective.Objective`: admitted against the target (a surplus one is
failed as today), reported after each epoch, pruned on its own at an epoch boundary (its lane
stops; the others go on unchanged), recorded as a trial alone records itself, its best epoch's
weights kept, and told COMPLETE, PRUNED or FAIL as soon as it ends, with its progress line. A
crash of the pack's program (or its ``trial_timeout``) fails every member still training, with
the reason; Ctrl-C or a stop request fails them as interrupted and is raised once every asked
trial is told, as ``study.optimize`` does. Each member records ``pack``: the trials it trained with.
A pack-epoch's storage traffic is one write and one read (:mod:`mnist_sweep.search._pack_storage`).

Example:
    >>> [o.state for o in run_pack(study, objective, TrialBudget(target_trials=32), [], members=4)]
    ['complete', 'complete', 'pruned', 'complete']
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from mnist_sweep.model.packed import PackedTrainer, pack_key
from mnist_sweep.model.training import DIVERGED_LOSS
from mnist_sweep.search._pack_storage import PackEpochStorage
from mnist_sweep.search.confirmation import CONFIRMS_ATTR
from mnist_sweep.search.objective import PACK_OF_ATTR, Objective, PreparedTrial
from mnist_sweep.search.outcomes import (
    TrialBudget,
    TrialOutcome,
    failed_by_another_worker,
    outcome_of_error,
    storage_error_in,
)
from mnist_sweep.storage._optuna_internals import heartbeat_thread, study_storage, trial_id

#: The user attribute that names the trials a member trained with (itself included).
PACK_ATTR = "pack"

Callback = Callable[[optuna.Study, FrozenTrial], None]  # the loop's progress line


def run_pack(study: optuna.Study, objective: Objective, budget: TrialBudget, callbacks: list[Callback],
             members: int) -> list[TrialOutcome]:
    """Ask up to ``members`` trials, train those of one structure together, the rest alone; tell each.
    Returns one outcome per asked trial, in the order they ended.

    Raises:
        KeyboardInterrupt: Ctrl-C or a stop request, once every asked trial is told (FAIL, interrupted).
        StorageUnavailable: the storage gave up (the trials still RUNNING are left to the heartbeat reaper).
    """
    pack = _Pack(study, objective, budget, callbacks)
    try:
        for group in _groups(pack.ask(members)):
            fatal = next((o.error for o in pack.outcomes if o.fatal is not None), None)
            if fatal is not None:  # a full disk: the loop stops the run on it, the others never start
                pack.abandon(fatal)
                break
            if len(group) > 1:
                pack.train_together(group)
            else:
                pack.train_alone(group[0])
    except BaseException as err:
        unavailable = storage_error_in(err)
        if unavailable is not None or not isinstance(err, (Exception, KeyboardInterrupt)):
            pack.release()
            raise (unavailable or err) from None
        pack.abandon(err)
        raise
    return pack.outcomes


def structural_params(params: Mapping[str, Any], distributions: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """The params whose value changes the pack key of ``params`` (tried at each axis's ends, middle and
    choices): what a trial sampled to train beside it must fix; the others may differ in a pack."""
    key = pack_key(params)
    fixed = {}
    for name, distribution in distributions.items():
        if any(pack_key({**params, name: other}) != key for other in _probes(distribution)):
            fixed[name] = params[name]
    return fixed


def _probes(distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
    return [low, (low + high) // 2 if isinstance(distribution, IntDistribution) else (low + high) / 2, high]


def _groups(prepared: list[PreparedTrial]) -> list[list[PreparedTrial]]:
    """The trials by pack key, the first trial's group first; on a backend other than JAX, each alone."""
    import keras

    if keras.backend.backend() != "jax":
        return [[p] for p in prepared]
    groups: dict[tuple, list[PreparedTrial]] = {}
    for p in prepared:
        groups.setdefault(pack_key(p.params), []).append(p)
    return list(groups.values())


def _best_first(trainer: PackedTrainer, live: Mapping[int, PreparedTrial]) -> list[int]:
    """The live members, best validation accuracy first: of members ending together the best are kept
    first, and those that cannot rank then are turned away before their model is saved."""
    return sorted(live, key=lambda i: -trainer.best_value(i))


def _queued(study: optuna.Study) -> int:  # trials waiting in the queue, winner confirmation's re-runs aside
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if CONFIRMS_ATTR not in t.user_attrs)


def _diverged(metrics: Mapping[str, float]) -> bool:  # fit's rule: the pack has already stopped such a member
    return not math.isfinite(loss := metrics.get("loss", 0.0)) or loss > DIVERGED_LOSS


def _reported(metrics: Mapping[str, float] | None) -> bool:  # what the hook would report (no diverged epoch)
    return metrics is not None and not _diverged(metrics) and math.isfinite(metrics["val_accuracy"])


class _Pack:
    """One :func:`run_pack`: the trials asked and not yet told (with heartbeats), the outcomes of those told."""

    def __init__(self, study: optuna.Study, objective: Objective, budget: TrialBudget,
                 callbacks: list[Callback]) -> None:
        self.study, self.objective, self.budget, self.callbacks = study, objective, budget, callbacks
        self.running: dict[int, tuple[optuna.Trial, Any]] = {}
        self.outcomes: list[TrialOutcome] = []
        self.latency: dict[str, float] = {}

    def ask(self, members: int) -> list[PreparedTrial]:
        """Up to ``members`` trials ready to train: from the queue while it holds any, else a sampled
        first one and others sampled with its structure fixed. Stops asking at a surplus trial."""
        queued = _queued(self.study)
        first = self._next()
        if first is None:
            return []
        prepared = [first]
        # Optuna's grid sampler fails a partly fixed trial ("All parameters must be specified"): ask and group
        partial = not queued and self.objective.sweep.sampler.name != "grid"
        fixed = structural_params(first.params, first.trial.distributions) if partial else None
        for _ in range((min(members, queued) if queued else members) - 1):
            if fixed is not None:  # queued just before it is asked: no leftover if the target is reached
                self.study.enqueue_trial(fixed, user_attrs={PACK_OF_ATTR: first.trial.number}, skip_if_exists=False)
            member = self._next()
            if member is not None:
                prepared.append(member)
            elif self.outcomes[-1].state == "surplus":
                break
        return prepared

    def _next(self) -> PreparedTrial | None:
        """One trial asked, admitted and built; None if it ended there (surplus, or its build failed)."""
        with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize": it is sent here
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = self.study.ask()
        beat = heartbeat_thread(trial)
        beat.start()
        self.running[trial.number] = (trial, beat)
        if self.objective.on_start is not None:
            self.objective.on_start(trial)
        try:
            self.objective.admit(trial, self.budget.target_trials)
            return self.objective.prepare(trial, free_memory=len(self.running) == 1)  # one collection a pack
        except Exception as err:  # noqa: BLE001 - it becomes the trial's outcome
            self.tell(trial, outcome_of_error(trial, err))
            return None

    def tell(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        """Tell Optuna how ``trial`` ended, stop its heartbeat, then show its progress line."""
        _, beat = self.running.pop(trial.number)
        try:
            if outcome.state == "complete":
                self.study.tell(trial, outcome.value)
            else:
                self.study.tell(trial, state=TrialState.PRUNED if outcome.state == "pruned" else TrialState.FAIL)
        except Exception as err:
            # the grid sampler, its grid done, calls study.stop(), which only an optimize loop takes:
            # the trial is told all the same (Optuna stores its state in a ``finally``)
            if not (isinstance(err, RuntimeError) and "Study.stop" in str(err)):
                self._not_told(trial, outcome, err)
                return
        finally:
            beat.join()
        self.outcomes.append(outcome)
        frozen = study_storage(self.study).get_trial(trial_id(trial))
        for callback in self.callbacks:
            callback(self.study, frozen)

    def _not_told(self, trial: optuna.Trial, outcome: TrialOutcome, err: Exception) -> None:
        """Telling ``trial`` failed: the storage gave up (raised), or another worker failed it while this
        one waited for the storage (its config runs again; nothing to show), or anything else (raised)."""
        unavailable = outcome.fatal or storage_error_in(err)
        if unavailable is not None:
            raise unavailable from None
        if not failed_by_another_worker(err, trial.number):
            raise err
        self.outcomes.append(outcome)

    def abandon(self, err: BaseException) -> None:  # every trial not yet told: interrupted, or failed
        for trial, _ in list(self.running.values()):
            self.tell(trial, outcome_of_error(trial, err))

    def release(self) -> None:  # the storage is gone: stop the heartbeats, the reaper fails the trials
        for _, beat in self.running.values():
            beat.join()
        self.running.clear()

    def train_alone(self, member: PreparedTrial) -> None:
        try:
            value = self.objective.train(member, self.budget.deadline)
        except Exception as err:  # noqa: BLE001 - it becomes the trial's outcome
            self.tell(member.trial, outcome_of_error(member.trial, err))
        else:
            self.tell(member.trial, self.objective.completed(member.trial, value))

    def train_together(self, group: list[PreparedTrial]) -> None:
        """Train ``group`` (one pack key) as one program, each member reported, pruned and told on its own."""
        objective, ds, first = self.objective, self.objective.dataset, group[0]
        for member in group:
            member.trial.set_user_attr(PACK_ATTR, [m.trial.number for m in group])
        live, storage = dict(enumerate(group)), PackEpochStorage(self.study)  # one write, one read an epoch
        hooks = {i: objective.epoch_hook(m, self.budget.deadline, storage.should_prune) for i, m in live.items()}
        single = len(objective.sweep.objectives) == 1  # Optuna keeps no epochs of multi-objective trials
        self.latency = {}  # one structure: its inference figures are measured once
        started = time.perf_counter()
        try:
            trainer = PackedTrainer([m.model for m in group], ds.x_train, ds.y_train, ds.x_val, ds.y_val,
                                    batch_size=first.batch_size, epochs=first.epochs,
                                    keep_best=objective.sweep.keep.models > 0, check=objective.timer(),
                                    seed=objective.sweep.seed + first.trial.number)
        except Exception as err:  # noqa: BLE001 - every member's outcome
            self._fail_all(live, err)
            return
        for epoch in range(first.epochs):
            try:
                metrics = trainer.run_epoch()
                storage.report([(m.trial, epoch + 1, metrics[i]["val_accuracy"]) for i, m in live.items()
                                if single and _reported(metrics[i])])
            except Exception as err:  # noqa: BLE001 - the program failed (or ran past trial_timeout)
                self._fail_all(live, err)
                return
            seconds = time.perf_counter() - started  # each member's fit_seconds: the pack's, to this epoch
            for i in _best_first(trainer, live):
                self._after_epoch(trainer, live, i, epoch, metrics[i], hooks[i], seconds)
            if not live:
                return
        for i in _best_first(trainer, live):  # the engine ran every epoch
            self._end(trainer, live, i, time.perf_counter() - started)

    def _after_epoch(self, trainer: PackedTrainer, live: dict[int, PreparedTrial], i: int, epoch: int,
                     metrics: dict[str, float] | None, hook: Any, seconds: float) -> None:
        """Member ``i``'s epoch as ``fit`` would take it: a diverged member ends unreported, the others
        report; one the hook stops (pruned, hard_timeout) or at its last epoch ends."""
        if metrics is None or _diverged(metrics):
            self._end(trainer, live, i, seconds)
            return
        try:
            stop = hook(epoch, metrics)
        except Exception as err:  # noqa: BLE001 - this member alone fails (a stop request is no Exception)
            trainer.stop(i, f"failed: {type(err).__name__}")
            member = live.pop(i)
            self.tell(member.trial, outcome_of_error(member.trial, err))
            return
        if stop:
            trainer.stop(i)
        if stop or epoch + 1 >= live[i].epochs:
            self._end(trainer, live, i, seconds)

    def _end(self, trainer: PackedTrainer, live: dict[int, PreparedTrial], i: int, seconds: float) -> None:
        """Member ``i`` has stopped: record it as a trial alone records itself, keep its model, tell it."""
        member = live.pop(i)
        try:
            result = trainer.result(i)
            model = trainer.write_back(i) if result.stop_reason is None else None
            value = self.objective.finish(member, result, seconds, model, self.latency)
        except Exception as err:  # noqa: BLE001 - pruned, diverged, or its model could not be kept
            self.tell(member.trial, outcome_of_error(member.trial, err))
        else:
            self.tell(member.trial, self.objective.completed(member.trial, value))

    def _fail_all(self, live: dict[int, PreparedTrial], err: Exception) -> None:
        """The pack's program failed: every member still training fails with its reason (counted once)."""
        if storage_error_in(err) is not None:
            raise err
        for i in list(live):
            member = live.pop(i)
            self.tell(member.trial, outcome_of_error(member.trial, err))
