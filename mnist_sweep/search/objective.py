"""The Optuna objective: suggest a config, build it with the factory, train, report, prune.

The objective maximises the best validation accuracy over the epochs of a trial. It reports
validation accuracy after every epoch (step = epochs done), so pruners and optuna-dashboard see
learning curves, and stores on the trial (user attributes):

- ``history``: per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``;
- ``n_params``, ``epoch_seconds`` (list), ``seconds_per_epoch`` (median), ``epochs_run``,
  ``latency_ms_batch1`` and ``images_per_s_batch1024`` (COMPLETE trials, :mod:`mnist_sweep.model.latency`),
  ``fit_seconds`` (the whole ``fit`` call: the rest of a trial's duration is framework overhead);
- ``fail_reason`` when a trial is pruned for divergence, fails, or is interrupted.

A diverging run (non-finite loss) is *pruned* with its reason: divergence is a property of the
config, and pruned trials still teach the sampler where not to go. A trial running past the
sweep's ``trial_timeout`` fails with that reason (checked every compiled call of a few batches).
Any other exception fails only its trial (the reason recorded) and the sweep goes on, except
two that no next trial can escape: the storage giving up and a full disk (``fatal``).

The sweep loop and the objective exchange values: the loop hands each trial its
:class:`TrialBudget` (deadline, target) and :meth:`Objective.run_trial` returns a
:class:`TrialOutcome` (state, value, failure, fatal error); the objective keeps no state between
trials. Called as Optuna's objective it runs each trial with no budget.

A trial is made in two steps around its training, which the one-at-a-time path (``fit``) and a
pack of trials trained as one program (:mod:`mnist_sweep.search.packs`) share, so a packed member
records exactly what a trial trained alone records: :meth:`Objective.prepare` (suggest, seed,
build) and :meth:`Objective.finish` (history, seconds, prune or divergence, value, latency, kept
model), with :meth:`Objective.epoch_hook` between them after every epoch.

Example:
    >>> objective = Objective(sweep, dataset)
    >>> study.optimize(objective, n_trials=3)
    >>> outcome = objective.run_trial(study.ask(), TrialBudget(target_trials=20))
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from mnist_sweep.data.dataset import Dataset
from mnist_sweep.model.factory import build_model, count_params
from mnist_sweep.model.latency import measure_inference
from mnist_sweep.model.training import EpochHook, FitResult, fit, fresh_keras
from mnist_sweep.search.confirmation import CONFIRMS_ATTR
from mnist_sweep.search.kept_models import keep_model
from mnist_sweep.search.outcomes import (
    Failure,
    OutcomeState,
    SurplusTrial,
    TrialBudget,
    TrialEpochHook,
    TrialOutcome,
    TrialTimeout,
    never,
    outcome_of_error,
)
from mnist_sweep.storage._optuna_internals import is_enqueued, set_user_attrs
from mnist_sweep.sweep.config import SweepConfig
from mnist_sweep.sweep.params import suggest_params

__all__ = ["Failure", "Objective", "OutcomeState", "PACK_OF_ATTR", "PreparedTrial", "SurplusTrial", "TrialBudget",
           "TrialEpochHook", "TrialOutcome", "TrialTimeout", "never"]

#: The user attribute of a trial queued by a pack with its first trial's structure fixed (that
#: trial's number): sampled, not hand-picked, so it may be pruned like any sampled trial.
PACK_OF_ATTR = "pack_of"


@dataclass(frozen=True)
class PreparedTrial:
    """A trial ready to train: its params and its compiled model (:meth:`Objective.prepare`)."""

    trial: optuna.Trial
    params: dict[str, Any]
    model: Any
    n_params: int
    enqueued: bool  # a hand-picked config (the sweep's ``enqueue:``, a confirmation): never pruned

    @property
    def batch_size(self) -> int:
        return int(self.params["batch_size"])

    @property
    def epochs(self) -> int:
        return int(self.params["epochs"])


class Objective:
    """Callable objective over one loaded :class:`Dataset` (loaded once, shared by all trials).

    Args:
        sweep: the validated sweep.
        dataset: train and validation arrays (the test arrays are never touched here).
        on_start: called with each trial as it starts (the CLI tracks the running trial).
        should_stop: asked after each epoch; ``True`` interrupts the trial (it is failed, not
            finished), so a stop signal whose exception was swallowed mid-epoch still stops it.
        on_epoch: called after each epoch (live progress).
        worker: recorded on each trial as the user attribute ``worker``.

    Nothing changes on the objective as trials run: :meth:`run_trial` takes the trial's budget and
    returns its outcome; :meth:`admit`, :meth:`prepare`, :meth:`epoch_hook`, :meth:`finish` and
    :meth:`completed` are its steps, for a caller that trains several trials at once.
    """

    def __init__(
        self,
        sweep: SweepConfig,
        dataset: Dataset,
        on_start: Callable[[optuna.Trial], None] | None = None,
        should_stop: Callable[[], bool] = never,
        on_epoch: TrialEpochHook | None = None,
        worker: int = 0,
    ) -> None:
        self.sweep = sweep
        self.dataset = dataset
        self.on_start = on_start
        self.should_stop = should_stop
        self.on_epoch = on_epoch
        self.worker = worker

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Optuna's objective: the trial with no budget; a prune or a failure is raised."""
        return self.run_trial(trial, TrialBudget()).result()

    def run_trial(self, trial: optuna.Trial, budget: TrialBudget) -> TrialOutcome:
        """Train ``trial`` within ``budget``; returns how it ended (raises nothing it could classify)."""
        if self.on_start is not None:
            self.on_start(trial)
        try:
            self.admit(trial, budget.target_trials)
            value = self._train(trial, budget.deadline)
        except (Exception, KeyboardInterrupt) as err:
            return outcome_of_error(trial, err)
        return self.completed(trial, value)

    def admit(self, trial: optuna.Trial, target_trials: int | None) -> None:
        """Let ``trial`` start: raises :class:`SurplusTrial` past the target, else records the worker."""
        if target_trials is not None and CONFIRMS_ATTR not in trial.user_attrs:  # re-runs count beyond it
            states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                      optuna.trial.TrialState.RUNNING)
            others = [t for t in trial.study.get_trials(deepcopy=False, states=states)
                      if t.number < trial.number and CONFIRMS_ATTR not in t.user_attrs]
            if len(others) >= target_trials:
                raise SurplusTrial(f"target of {target_trials} trials already reached or running")
        trial.set_user_attr("worker", self.worker)

    def completed(self, trial: optuna.Trial, value: float) -> TrialOutcome:
        """The outcome of a trial that finished with validation accuracy ``value`` (and its costs, in a
        multi-objective study, as the trial recorded them)."""
        if len(self.sweep.objectives) > 1:
            attrs = trial.user_attrs  # the costs this trial recorded, minimised beside its accuracy
            return TrialOutcome(trial.number, "complete",
                                value=(value, *(float(attrs[name]) for name in self.sweep.objectives[1:])))
        return TrialOutcome(trial.number, "complete", value=value)

    def timer(self) -> Callable[[], None] | None:
        """The check of the sweep's ``trial_timeout``, counted from now: raises :class:`TrialTimeout` past it."""
        limit = self.sweep.trial_timeout
        if limit is None:
            return None
        ends = time.monotonic() + limit

        def check() -> None:
            if time.monotonic() >= ends:
                raise TrialTimeout(f"ran past the sweep's trial_timeout of {limit:g} s")

        return check

    def prepare(self, trial: optuna.Trial, free_memory: bool = True) -> PreparedTrial:
        """Suggest ``trial``'s params and build its model, seeded with the sweep's seed + its number
        (``free_memory=False``: without the garbage collection that frees the previous trial's model)."""
        params = suggest_params(trial, self.sweep.space)
        ds = self.dataset
        fresh_keras(self.sweep.seed + trial.number, free_memory=free_memory)
        model = build_model(
            params,
            steps_per_epoch=max(1, len(ds.x_train) // int(params["batch_size"])),  # the partial batch is dropped
            steps_per_execution=self.sweep.training.steps_per_execution,
            input_size=ds.x_train.shape[1], class_names=ds.class_names, preprocessing=ds.preprocessing,
        )
        n_params = count_params(model)
        trial.set_user_attr("n_params", n_params)
        enqueued = is_enqueued(trial) and PACK_OF_ATTR not in trial.user_attrs
        return PreparedTrial(trial, params, model, n_params, enqueued)

    def epoch_hook(self, prepared: PreparedTrial, deadline: float | None,
                   pruning: Callable[[optuna.Trial], bool] | None = None) -> EpochHook:
        """What runs after each epoch of ``prepared``: report to Optuna, show progress, and say whether
        to stop (pruned, or past the sweep's ``hard_timeout``); a stop request raises KeyboardInterrupt.

        ``pruning`` (a pack's): the epoch's value is already reported, with the other members' in one
        write, and this asks the pruner, from one read of the study a pack-epoch, in place of
        ``trial.should_prune()``.
        """
        trial, epochs = prepared.trial, prepared.epochs
        single_objective = len(self.sweep.objectives) == 1
        prunable = not prepared.enqueued and single_objective  # a hand-picked config runs whole

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            if self.should_stop():
                raise KeyboardInterrupt("stop requested")
            value = metrics["val_accuracy"]
            if math.isfinite(value) and single_objective and pruning is None:  # none kept when multi-objective
                trial.report(value, step=epoch + 1)
            if self.on_epoch is not None:
                self.on_epoch(trial, epoch, epochs, metrics)
            if epoch + 1 < epochs and deadline is not None and time.monotonic() >= deadline:
                trial.set_user_attr("fail_reason", f"stopped after epoch {epoch + 1}: the sweep's hard_timeout")
                return True
            # the last epoch is paid for: keep it
            return epoch + 1 < epochs and prunable and (trial.should_prune() if pruning is None else pruning(trial))

        return report

    def finish(self, prepared: PreparedTrial, result: FitResult, fit_seconds: float, model: Any = None,
               same_structure: dict[str, float] | None = None) -> float:
        """Record what training did on the trial and return its value; raises ``TrialPruned`` for a
        pruned or diverged run. Keeps the model (``model``, default the prepared one) when it ranks.

        ``same_structure``: the inference figures of models of this trial's structure, shared by the
        members of a pack (their networks are alike layer for layer): measured by the first member
        that completes, into the dict, and recorded as they are by the others.
        """
        trial = prepared.trial
        record: dict[str, Any] = {"fit_seconds": round(fit_seconds, 4), "history": result.history,
                                  "epoch_seconds": [round(s, 4) for s in result.epoch_seconds],
                                  "epochs_run": result.epochs_run}
        if result.epoch_seconds:
            record["seconds_per_epoch"] = round(statistics.median(result.epoch_seconds), 4)
        if result.diverged or result.stop_reason is not None:
            if result.diverged:
                record["fail_reason"] = result.stop_reason
            set_user_attrs(trial, record)
            why = result.stop_reason if result.diverged else f"pruned after epoch {result.epochs_run}"
            raise optuna.TrialPruned(why)
        value = max(v for v in result.history["val_accuracy"] if math.isfinite(v))
        model = prepared.model if model is None else model
        costs: dict[str, float] = {"n_params": prepared.n_params}
        if self.sweep.training.measure_latency:
            if same_structure is not None and not same_structure:
                same_structure.update(measure_inference(model))
            figures = same_structure if same_structure is not None else measure_inference(model)
            record.update(figures)
            costs.update(figures)
        set_user_attrs(trial, record)  # one write
        if result.best_weights is not None:
            keep_model(trial, model, result.best_weights, result.best_epoch or result.epochs_run, value,
                       self.sweep.keep.models, costs=costs, pareto=self.sweep.keep.pareto)
        return value

    def _train(self, trial: optuna.Trial, deadline: float | None) -> float:
        return self.train(self.prepare(trial), deadline)

    def train(self, prepared: PreparedTrial, deadline: float | None) -> float:
        """Train ``prepared`` alone (``fit``) and finish it: its value, or ``TrialPruned`` raised."""
        ds = self.dataset
        fit_start = time.perf_counter()
        result = fit(prepared.model, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=prepared.batch_size,
                     epochs=prepared.epochs, on_epoch=self.epoch_hook(prepared, deadline), drop_remainder=True,
                     keep_best=self.sweep.keep.models > 0, check=self.timer())
        return self.finish(prepared, result, time.perf_counter() - fit_start)
