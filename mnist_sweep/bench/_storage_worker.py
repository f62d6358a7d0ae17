"""One worker process of :mod:`mnist_sweep.bench.storage`: a sweep trial's storage traffic, timed.

A trial does to the storage what a sweep's does (see the bench's docstring), with a sleep standing in
for the training; every method of the storage object the study calls (and of the RDB storage under
it) is wrapped in a clock, so the figures are the time spent inside the storage.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from mnist_sweep.storage._optuna_internals import is_enqueued, study_storage
from mnist_sweep.storage.rdb import open_storage
from mnist_sweep.sweep.config import HeartbeatConfig

EPOCHS, EPOCH_SLEEP_S = 10, 0.02
READY_TIMEOUT_S = 300.0
_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)


class _Clock:
    """Seconds inside wrapped calls, outermost only: [wall, CPU, calls] of the main thread, wall of others."""

    def __init__(self) -> None:
        self.main, self.background = [0.0, 0.0, 0], 0.0
        self._ident, self._local = threading.get_ident(), threading.local()

    def take(self) -> tuple[list[Any], float]:
        taken = self.main, self.background
        self.main, self.background = [0.0, 0.0, 0], 0.0
        return taken

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "inside", False):  # a call the storage makes to itself
                return fn(*args, **kwargs)
            self._local.inside, start, cpu = True, time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.inside, elapsed = False, time.perf_counter() - start
                if threading.get_ident() == self._ident:
                    self.main[0] += elapsed
                    self.main[1] += time.thread_time() - cpu
                    self.main[2] += 1
                else:
                    self.background += elapsed
        return timed


def _time_storage(storage: Any, clock: _Clock) -> None:
    """Wrap every method of ``storage`` in ``clock``, on the instance: private ones too, since the
    layer above calls some (``_CachedStorage`` reads through ``RDBStorage._get_trials``)."""
    for name, _ in inspect.getmembers(type(storage), inspect.isfunction):
        if not name.startswith("__"):
            setattr(storage, name, clock.wrap(getattr(storage, name)))


def _suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Twelve parameters, suggested as a sweep's space suggests them."""
    ints = {"hidden_layers": (0, 3, 1), "units": (32, 1024, 32), "layer_1_units": (32, 1024, 32),
            "layer_2_units": (32, 1024, 32)}
    floats = {"dropout": (0.0, 0.5, 0.1, False), "learning_rate": (1e-4, 1e-1, None, True),
              "weight_decay": (1e-6, 1e-2, None, True), "label_smoothing": (0.0, 0.2, None, False)}
    choices = {"optimizer": ["sgd", "adam", "adamw", "rmsprop"], "batch_size": [32, 64, 128, 256],
               "activation": ["relu", "gelu", "tanh"], "batch_norm": [False, True]}
    params = {k: trial.suggest_int(k, low, high, step=step) for k, (low, high, step) in ints.items()}
    params |= {k: trial.suggest_float(k, low, high, step=step, log=log) for k, (low, high, step, log) in floats.items()}
    return params | {k: trial.suggest_categorical(k, v) for k, v in choices.items()}


def _objective(trial: optuna.Trial, worker: int, report_every: int = 1) -> float:
    """A sweep trial's storage traffic (mnist_sweep.search.objective), with a sleep for the training."""
    trial.study.get_trials(deepcopy=False, states=_DONE)  # the surplus check
    trial.set_user_attr("worker", worker)
    params = _suggest(trial)
    is_enqueued(trial)
    trial.set_user_attr("n_params", 784 * params["units"] + params["layer_1_units"] * params["layer_2_units"])
    history: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        time.sleep(EPOCH_SLEEP_S)
        accuracy = 1 - 0.5 / (epoch + 1) - params["dropout"] / 10
        for key, value in zip(history, (1 - accuracy, accuracy, 1.05 - accuracy, accuracy - 0.01), strict=True):
            history[key].append(round(value, 6))
        if (epoch + 1) % report_every:
            continue
        trial.report(history["val_accuracy"][-1], step=epoch + 1)
        if epoch + 1 < EPOCHS and trial.should_prune():
            raise optuna.TrialPruned()
    fit = time.perf_counter() - start
    for key, value in (("fit_seconds", round(fit, 4)), ("history", history), ("epochs_run", EPOCHS),
                       ("epoch_seconds", [round(fit / EPOCHS, 4)] * EPOCHS), ("seconds_per_epoch", fit / EPOCHS)):
        trial.set_user_attr(key, value)
    return max(history["val_accuracy"])


def run_worker(target: str | tuple[str, int], study_name: str, index: int, n_trials: int, heartbeat: bool,
               sampler: str, report_every: int, barrier: Any, results: Any, workdir: str | None = None) -> None:
    """One worker process: get ready, wait for the others, run ``n_trials`` trials, send the figures.
    It works in ``workdir`` (the bench's scratch folder) when given, never in its parent's folder."""
    try:
        if workdir is not None:
            os.chdir(workdir)  # this spawned process's own working directory, not the bench's
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if isinstance(target, tuple):
            rdb, storage = None, optuna.storages.GrpcStorageProxy(host=target[0], port=target[1])
            storage.wait_server_ready(timeout=60)
        else:  # as a sweep opens it, with the sweep's default heartbeat
            rdb = storage = open_storage(target, HeartbeatConfig() if heartbeat else None)
        seed = 1000 + index
        study = optuna.load_study(
            study_name=study_name, storage=storage, pruner=optuna.pruners.MedianPruner(5, n_warmup_steps=EPOCHS),
            sampler=optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed))
        top, low, rows = _Clock(), _Clock(), []
        _time_storage(study_storage(study), top)
        if rdb is not None:
            _time_storage(rdb, low)
        barrier.wait(timeout=READY_TIMEOUT_S)
        began = time.monotonic()
        for _ in range(n_trials):
            top.take()
            low.take()
            start = time.perf_counter()
            study.get_trials(deepcopy=False)  # the sweep loop's count before every trial
            study.optimize(lambda t: _objective(t, index, report_every), n_trials=1, gc_after_trial=False)
            wall = time.perf_counter() - start
            ((seconds, cpu, calls), background), rdb_seconds = top.take(), low.take()[0][0]
            rows.append((seconds, rdb_seconds if rdb is not None else None, calls, wall, background, cpu))
        results.put(("ok", index, began, time.monotonic(), rows))
    except BaseException:  # noqa: B036 (the parent must hear of any end)
        barrier.abort()  # nobody waits for this one
        results.put(("error", index, 0.0, 0.0, traceback.format_exc()))
