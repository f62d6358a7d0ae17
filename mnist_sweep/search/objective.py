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

Example:
    >>> objective = Objective(sweep, dataset)
    >>> study.optimize(objective, n_trials=3)
    >>> outcome = objective.run_trial(study.ask(), TrialBudget(target_trials=20))
"""

from __future__ import annotations

import errno
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import optuna

from mnist_sweep.data.dataset import Dataset
from mnist_sweep.errors import StorageUnavailable
from mnist_sweep.model.factory import build_model, count_params
from mnist_sweep.model.latency import measure_inference
from mnist_sweep.model.training import fit, fresh_keras
from mnist_sweep.search.confirmation import CONFIRMS_ATTR
from mnist_sweep.search.kept_models import keep_model
from mnist_sweep.storage._optuna_internals import is_enqueued
from mnist_sweep.sweep.config import SweepConfig
from mnist_sweep.sweep.params import suggest_params

#: Called after each epoch with (trial, epoch index, epochs planned, metrics): live progress.
TrialEpochHook = Callable[[optuna.Trial, int, int, dict[str, float]], None]

#: How a trial ended: finished (``complete``), ``pruned`` (or diverged), crashed (``failed``),
#: not run because the target was reached (``surplus``), stopped by a signal (``interrupted``),
#: or stopped by an error no next trial can escape (``fatal``: the storage gave up, the disk is full).
OutcomeState = Literal["complete", "pruned", "failed", "surplus", "interrupted", "fatal"]


def never() -> bool:
    """The default ``should_stop``: nothing asks the sweep to stop."""
    return False


@dataclass(frozen=True)
class TrialBudget:
    """What the sweep loop allows one trial.

    ``deadline``: the ``time.monotonic()`` at which a running trial stops after its epoch (the
    sweep's ``hard_timeout``), or None. ``target_trials``: a trial that starts after this many
    others are already finished or running is surplus and does not run (exact targets with
    parallel workers), or None (winner confirmation's re-runs count beyond the target).
    """

    deadline: float | None = None
    target_trials: int | None = None

    def expired(self) -> bool:
        """Whether the deadline has passed: no trial starts then."""
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass(frozen=True)
class Failure:
    """A trial that failed (crashed): its number, one-line reason and traceback."""

    trial: int
    reason: str
    traceback: str


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, as :meth:`Objective.run_trial` returns it to the sweep loop.

    ``value`` is what Optuna is told for a ``complete`` trial; ``error`` what is raised to tell it
    the others (pruned, failed...); ``failure`` the reason and traceback of a ``failed`` trial;
    ``fatal`` the error that must stop the sweep (:class:`~mnist_sweep.errors.StorageUnavailable`,
    or one made of a full disk).
    """

    trial: int
    state: OutcomeState
    value: float | tuple[float, ...] | None = None
    error: BaseException | None = None
    failure: Failure | None = None
    fatal: StorageUnavailable | None = None

    def result(self) -> float | tuple[float, ...]:
        """The value for Optuna, or the trial's exception raised (Optuna's way to hear of a prune or a failure)."""
        if self.error is None:
            assert self.value is not None
            return self.value
        if self.state == "failed":
            raise self.error from None  # its traceback is recorded on the trial already
        raise self.error


class SurplusTrial(Exception):
    """This trial would take the study past its target (parallel workers raced); it does not run."""


class TrialTimeout(Exception):
    """The trial ran longer than the sweep's ``trial_timeout``: it is failed, the worker goes on."""


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
    returns its outcome.
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
            self._check_not_surplus(trial, budget.target_trials)
            trial.set_user_attr("worker", self.worker)
            value = self._train(trial, budget.deadline)
        except SurplusTrial as err:
            trial.set_user_attr("fail_reason", f"SurplusTrial: target of {budget.target_trials} trials already "
                                               "reached or running")
            return TrialOutcome(trial.number, "surplus", error=err)
        except optuna.TrialPruned as err:
            return TrialOutcome(trial.number, "pruned", error=err)
        except KeyboardInterrupt as err:
            trial.set_user_attr("fail_reason", f"interrupted ({type(err).__name__})")
            return TrialOutcome(trial.number, "interrupted", error=err)
        except StorageUnavailable as err:
            return TrialOutcome(trial.number, "fatal", error=err, fatal=err)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                return self._failed(trial, err)
            full = StorageUnavailable(f"the disk is full ({err.filename or 'writing a trial'}: {err.strerror}); "
                                      "free some space and run the same command to resume")
            return TrialOutcome(trial.number, "fatal", error=err, fatal=full)
        except Exception as err:
            return self._failed(trial, err)
        if len(self.sweep.objectives) > 1:
            attrs = trial.user_attrs  # the costs this trial recorded, minimised beside its accuracy
            return TrialOutcome(trial.number, "complete",
                                value=(value, *(float(attrs[name]) for name in self.sweep.objectives[1:])))
        return TrialOutcome(trial.number, "complete", value=value)

    def _failed(self, trial: optuna.Trial, err: Exception) -> TrialOutcome:
        """Record why ``trial`` failed (reason, traceback) on it; called while ``err`` is handled."""
        reason, trace = f"{type(err).__name__}: {err}"[:500], traceback.format_exc()[-4000:]
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("fail_traceback", trace)
        return TrialOutcome(trial.number, "failed", error=err, failure=Failure(trial.number, reason, trace))

    def _timer(self, trial: optuna.Trial) -> Callable[[], None] | None:
        """The check of the sweep's ``trial_timeout`` for ``trial``: raises :class:`TrialTimeout` past it."""
        limit = self.sweep.trial_timeout
        if limit is None:
            return None
        ends = time.monotonic() + limit

        def check() -> None:
            if time.monotonic() >= ends:
                raise TrialTimeout(f"ran past the sweep's trial_timeout of {limit:g} s")

        return check

    def _check_not_surplus(self, trial: optuna.Trial, target_trials: int | None) -> None:
        if target_trials is None or CONFIRMS_ATTR in trial.user_attrs:  # re-runs count beyond the target
            return
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        others = [t for t in trial.study.get_trials(deepcopy=False, states=states)
                  if t.number < trial.number and CONFIRMS_ATTR not in t.user_attrs]
        if len(others) >= target_trials:
            raise SurplusTrial(f"target of {target_trials} trials already reached or running")

    def _train(self, trial: optuna.Trial, deadline: float | None) -> float:
        params = suggest_params(trial, self.sweep.space)
        ds = self.dataset
        batch_size, epochs = int(params["batch_size"]), int(params["epochs"])
        fresh_keras(self.sweep.seed + trial.number)
        model = build_model(
            params,
            steps_per_epoch=max(1, len(ds.x_train) // batch_size),  # fit drops the partial batch
            steps_per_execution=self.sweep.training.steps_per_execution,
            input_size=ds.x_train.shape[1], class_names=ds.class_names, preprocessing=ds.preprocessing,
        )
        n_params = count_params(model)
        trial.set_user_attr("n_params", n_params)

        enqueued = is_enqueued(trial)
        single_objective = len(self.sweep.objectives) == 1

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            if self.should_stop():
                raise KeyboardInterrupt("stop requested")
            value = metrics["val_accuracy"]
            if math.isfinite(value) and single_objective:  # Optuna keeps no epochs of multi-objective trials
                trial.report(value, step=epoch + 1)
            if self.on_epoch is not None:
                self.on_epoch(trial, epoch, epochs, metrics)
            if epoch + 1 < epochs and deadline is not None and time.monotonic() >= deadline:
                trial.set_user_attr("fail_reason", f"stopped after epoch {epoch + 1}: the sweep's hard_timeout")
                return True
            # the last epoch is paid for: keep it; an enqueued trial is a hand-picked config: run it whole
            return epoch + 1 < epochs and not enqueued and single_objective and trial.should_prune()

        keep = self.sweep.keep.models
        fit_start = time.perf_counter()
        result = fit(model, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=batch_size, epochs=epochs,
                     on_epoch=report, drop_remainder=True, keep_best=keep > 0, check=self._timer(trial))
        trial.set_user_attr("fit_seconds", round(time.perf_counter() - fit_start, 4))
        trial.set_user_attr("history", result.history)
        trial.set_user_attr("epoch_seconds", [round(s, 4) for s in result.epoch_seconds])
        trial.set_user_attr("epochs_run", result.epochs_run)
        if result.epoch_seconds:
            trial.set_user_attr("seconds_per_epoch", round(statistics.median(result.epoch_seconds), 4))
        if result.diverged:
            trial.set_user_attr("fail_reason", result.stop_reason)
            raise optuna.TrialPruned(result.stop_reason)
        if result.stop_reason is not None:
            raise optuna.TrialPruned(f"pruned after epoch {result.epochs_run}")
        value = max(v for v in result.history["val_accuracy"] if math.isfinite(v))
        costs: dict[str, float] = {"n_params": n_params}
        if self.sweep.training.measure_latency:
            for key, figure in measure_inference(model).items():
                trial.set_user_attr(key, figure)
                costs[key] = figure
        if result.best_weights is not None:
            keep_model(trial, model, result.best_weights, result.best_epoch or result.epochs_run, value, keep,
                       costs=costs, pareto=self.sweep.keep.pareto)
        return value
