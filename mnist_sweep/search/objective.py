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
two that no next trial can escape: the storage giving up and a full disk, which the objective
keeps as :attr:`Objective.fatal` for the sweep loop to stop on.

Example:
    >>> objective = Objective(sweep, dataset)
    >>> study.optimize(objective, n_trials=3)
"""

from __future__ import annotations

import errno
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Failure:
    """A trial that failed (crashed): its number, one-line reason and traceback."""

    trial: int
    reason: str
    traceback: str


class SurplusTrial(Exception):
    """This trial would take the study past its target (parallel workers raced); it does not run."""


class TrialTimeout(Exception):
    """The trial ran longer than the sweep's ``trial_timeout``: it is failed, the worker goes on."""


class Objective:
    """Callable objective over one loaded :class:`Dataset` (loaded once, shared by all trials).

    Args:
        sweep: the validated sweep.
        dataset: train and validation arrays (the test arrays are never touched here).
        target_trials: when set, a trial that starts after ``target_trials`` others are already
            finished or running raises :class:`SurplusTrial` (exact targets with parallel workers).
        on_start: called with each trial as it starts (the CLI tracks the running trial).
        should_stop: asked after each epoch; ``True`` interrupts the trial (it is failed, not
            finished), so a stop signal whose exception was swallowed mid-epoch still stops it.
        on_epoch: called after each epoch (live progress).
        worker: recorded on each trial as the user attribute ``worker``.

    ``failures_in_a_row`` counts this objective's trials that failed one after another (a trial
    that finishes resets it; a surplus trial does not count), ``first_failure`` is the first of them.
    ``current_trial`` is the trial running (or last run); ``fatal`` the error that must stop the
    sweep (:class:`~mnist_sweep.errors.StorageUnavailable`, or one made of a full disk).
    """

    def __init__(
        self,
        sweep: SweepConfig,
        dataset: Dataset,
        target_trials: int | None = None,
        on_start: Callable[[optuna.Trial], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_epoch: TrialEpochHook | None = None,
        worker: int = 0,
    ) -> None:
        self.sweep = sweep
        self.dataset = dataset
        self.target_trials = target_trials
        self.on_start = on_start
        self.should_stop = should_stop
        self.on_epoch = on_epoch
        self.worker = worker
        self.failures_in_a_row = 0
        self.first_failure: Failure | None = None
        self.deadline: float | None = None  # time.monotonic() at which running trials stop (hard_timeout)
        self.current_trial: optuna.Trial | None = None
        self.fatal: StorageUnavailable | None = None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self.current_trial = trial
        if self.on_start is not None:
            self.on_start(trial)
        try:
            self._check_not_surplus(trial)
            trial.set_user_attr("worker", self.worker)
            value = self._train(trial)
        except SurplusTrial:
            trial.set_user_attr("fail_reason", f"SurplusTrial: target of {self.target_trials} trials already "
                                               "reached or running")
            raise
        except optuna.TrialPruned:
            self.failures_in_a_row = 0
            raise
        except KeyboardInterrupt as err:
            trial.set_user_attr("fail_reason", f"interrupted ({type(err).__name__})")
            raise
        except StorageUnavailable as err:
            self.fatal = err
            raise
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise self._failed(trial, err) from None
            self.fatal = StorageUnavailable(f"the disk is full ({err.filename or 'writing a trial'}: {err.strerror}); "
                                            "free some space and run the same command to resume")
            raise
        except Exception as err:
            raise self._failed(trial, err) from None
        self.failures_in_a_row = 0
        if len(self.sweep.objectives) == 1:
            return value
        attrs = trial.user_attrs  # the costs this trial recorded, minimised beside its accuracy
        return (value, *(float(attrs[name]) for name in self.sweep.objectives[1:]))

    def _failed(self, trial: optuna.Trial, err: Exception) -> Exception:
        """Record why ``trial`` failed (reason, traceback); returns ``err`` to raise."""
        reason, trace = f"{type(err).__name__}: {err}"[:500], traceback.format_exc()[-4000:]
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("fail_traceback", trace)
        if self.failures_in_a_row == 0:
            self.first_failure = Failure(trial.number, reason, trace)
        self.failures_in_a_row += 1
        return err

    def past_deadline(self) -> bool:
        """Whether the sweep's hard_timeout has passed: no trial starts then."""
        return self.deadline is not None and time.monotonic() >= self.deadline

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

    def _check_not_surplus(self, trial: optuna.Trial) -> None:
        if self.target_trials is None or CONFIRMS_ATTR in trial.user_attrs:  # re-runs count beyond the target
            return
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        others = [t for t in trial.study.get_trials(deepcopy=False, states=states)
                  if t.number < trial.number and CONFIRMS_ATTR not in t.user_attrs]
        if len(others) >= self.target_trials:
            raise SurplusTrial(f"target of {self.target_trials} trials already reached or running")

    def _train(self, trial: optuna.Trial) -> float:
        params = suggest_params(trial, self.sweep.space)
        ds = self.dataset
        batch_size, epochs = int(params["batch_size"]), int(params["epochs"])
        fresh_keras(self.sweep.seed + trial.number)
        model = build_model(
            params,
            steps_per_epoch=max(1, len(ds.x_train) // batch_size),  # fit drops the partial batch
            steps_per_execution=self.sweep.training.steps_per_execution,
            input_size=ds.x_train.shape[1], class_names=ds.class_names,
        )
        n_params = count_params(model)
        trial.set_user_attr("n_params", n_params)

        enqueued = is_enqueued(trial)
        single_objective = len(self.sweep.objectives) == 1

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            if self.should_stop is not None and self.should_stop():
                raise KeyboardInterrupt("stop requested")
            value = metrics["val_accuracy"]
            if math.isfinite(value) and single_objective:  # Optuna keeps no epochs of multi-objective trials
                trial.report(value, step=epoch + 1)
            if self.on_epoch is not None:
                self.on_epoch(trial, epoch, epochs, metrics)
            if epoch + 1 < epochs and self.deadline is not None and time.monotonic() >= self.deadline:
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
