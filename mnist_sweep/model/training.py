"""Training one model: the loop that the objective, ``train`` and ``bench`` share.

:func:`fit` trains a model from :mod:`mnist_sweep.model.factory` on arrays, records the per-epoch
history and seconds, stops at a diverging (non-finite) loss, and calls ``on_epoch`` after each
epoch so the objective can report to Optuna and stop a pruned trial.

Example:
    >>> fresh_keras(seed=0)
    >>> model = build_model({"hidden_layers": 1, "units": 32, "epochs": 1})
    >>> result = fit(model, x, y, x_val, y_val, batch_size=128, epochs=1)
    >>> sorted(result.history)
    ['accuracy', 'loss', 'val_accuracy', 'val_loss']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnist_sweep._base.settings import keras_without_tensorflow

#: A training loss above this is divergence: three times the loss of guessing (ln 10). Keras's JAX
#: backend clips probabilities, so a diverged run there shows a finite loss near 14-16, not NaN.
DIVERGED_LOSS = 3 * math.log(10)

#: Called after each epoch with (epoch index, metrics); returning True stops training.
EpochHook = Callable[[int, dict[str, float]], bool]


@dataclass
class FitResult:
    """What one training run did, epoch by epoch."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    stop_reason: str | None = None  # None: ran all epochs; "diverged: ..." or "stopped by hook"
    best_weights: list[np.ndarray] | None = None  # with keep_best: the weights of the best validation epoch
    best_epoch: int | None = None  # 1-based

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_seconds)

    @property
    def diverged(self) -> bool:
        return bool(self.stop_reason and self.stop_reason.startswith("diverged"))


def fresh_keras(seed: int | None, free_memory: bool = True) -> None:
    """Free the previous model's Keras state, then seed Python, NumPy and the backend.

    The order matters: ``clear_session`` replaces the global state that ``set_random_seed`` writes.
    ``free_memory=False`` skips the garbage collection (a few tenths of a second in a sweep's heap):
    the models of a pack are built one after another and all stay alive, one collection serves them.
    """
    import keras

    keras.utils.clear_session(free_memory=free_memory)
    keras_without_tensorflow()
    if seed is None:
        return
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
    else:
        _seed_without_tensorflow(seed)


def _seed_without_tensorflow(seed: int) -> None:
    """``keras.utils.set_random_seed`` minus its ``tf.random.set_seed``: on JAX that call imports
    TensorFlow into every worker (4 s and a heap that makes each trial's ``gc.collect`` slower)
    only to seed ``tf.data``, which the JAX trainer does not use for arrays."""
    import random

    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def validation_batch_size(n: int, batch_size: int, largest: int = 1024) -> int:
    """A validation batch as big as ``largest`` that divides ``n`` when one of at least half that
    size does, so every validation step has one shape and XLA compiles the step once, not twice.

    >>> validation_batch_size(12000, 128), validation_batch_size(5000, 128), validation_batch_size(1009, 128)
    (1000, 1000, 1024)
    """
    top = max(batch_size, largest)
    if n <= top:
        return max(n, 1)
    for size in range(top, top // 2 - 1, -1):
        if n % size == 0:
            return size
    return top


def _callback(result: FitResult, on_epoch: EpochHook | None, keep_best: bool = False,
              check: Callable[[], None] | None = None) -> Any:
    import keras

    class _Recorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            result.epoch_seconds.append(time.perf_counter() - self._start)
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            for key, value in metrics.items():
                result.history.setdefault(key, []).append(value)
            loss = metrics.get("loss", 0.0)
            value = metrics.get("val_accuracy", -math.inf)
            if keep_best and math.isfinite(value) and value > max(result.history["val_accuracy"][:-1], default=-1.0):
                result.best_weights = [np.array(w) for w in self.model.get_weights()]  # a copy: training goes on
                result.best_epoch = epoch + 1
            if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                result.stop_reason = f"diverged: loss is {loss:.4g} at epoch {epoch + 1}"
                self.model.stop_training = True
            elif on_epoch is not None and on_epoch(epoch, metrics):
                result.stop_reason = "stopped by hook"
                self.model.stop_training = True

    if check is None:  # no batch hook at all: Keras then skips the per-batch callback machinery
        return _Recorder()

    class _CheckedRecorder(_Recorder):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            check()

    return _CheckedRecorder()


def fit(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    batch_size: int,
    epochs: int,
    on_epoch: EpochHook | None = None,
    verbose: int = 0,
    drop_remainder: bool = False,
    keep_best: bool = False,
    check: Callable[[], None] | None = None,
) -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs; validate after each one when ``x_val`` is given.

    ``drop_remainder`` leaves out the last ``len(x) % batch_size`` images (fewer than one batch;
    the split is already shuffled): a partial last batch is a second shape that XLA compiles
    again, about 0.4 s per trial, which a sweep of short trials pays hundreds of times.

    ``keep_best`` keeps a copy of the weights of the epoch with the best validation accuracy
    (``result.best_weights``, ``result.best_epoch``), so that model can be kept without retraining.

    ``check`` is called after every compiled call (``steps_per_execution`` batches) and may raise to
    abort the run mid-epoch (a trial past its ``trial_timeout``).
    """
    result = FitResult()
    if drop_remainder and len(x) > batch_size:
        keep = len(x) - len(x) % batch_size
        x, y = x[:keep], y[:keep]
    validation = (x_val, y_val) if x_val is not None else None
    model.fit(
        x, y, batch_size=batch_size, epochs=epochs, validation_data=validation,
        validation_batch_size=validation_batch_size(len(x_val), batch_size) if x_val is not None else None,
        callbacks=[_callback(result, on_epoch, keep_best and x_val is not None, check)], verbose=verbose, shuffle=True,
    )
    return result
