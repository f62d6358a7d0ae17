"""Packed training: K models of one structure trained as one JAX program, an epoch on the device.

Trials whose models have the same structure (:func:`pack_key`) train together: the K models that
:func:`mnist_sweep.model.factory.build_model` built (each after its own ``fresh_keras(seed)``) are
run through Keras 3's stateless API (``model.stateless_call``, ``optimizer.stateless_apply``) on
the first one, their variables stacked to shape ``(K, ...)`` and the train step ``jax.vmap``-ped over
members with the batch shared. The training data go to the device once; each epoch is shuffled
there and runs as compiled loops (the whole epoch in one call, or calls of about :data:`CHUNK_STEPS`
batches with ``check`` between them), then every member is validated in the same way. On a CPU the
loop takes two steps per iteration and members whose state outgrows the cache run one after another
within the call (:mod:`mnist_sweep.model._packed_program` says why).

What differs per member comes free where it is a variable: initial weights, dropout rates and
seeds (:class:`~mnist_sweep.model.layers.VariableDropout`), augmentation magnitudes, a constant
learning rate (the optimizer's ``learning_rate`` variable). A cosine schedule's initial rate and
the weight decay are Python floats in Keras: they go into the traced step as per-member values
(the schedule's ``initial_learning_rate`` and the optimizer's ``weight_decay`` swapped for the
trace), so Keras's own formulas apply them. Traps this module avoids are written down in the
project's notes on packed training (per-member seed states, returned non-trainable variables).

A stopped member (pruned, failed, diverged) keeps its lane until the pack can shrink to half its
slots or fewer: then the active members move to a pack of the next power of two (one new program,
taken when the remaining epochs pay for its compilation). The others' results do not change.

Example:
    >>> trainer = PackedTrainer(models, x, y, x_val, y_val, batch_size=128, epochs=3)
    >>> for epoch in range(3):
    ...     metrics = trainer.run_epoch()          # [{"loss": ..., "val_accuracy": ...}, ...]
    >>> trainer.result(0).history["val_accuracy"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mnist_sweep.model import _packed_program as program
from mnist_sweep.model._packed_program import PackProgram, lane_values
from mnist_sweep.model.factory import layer_widths, resolve_params
from mnist_sweep.model.training import DIVERGED_LOSS, FitResult, validation_batch_size

#: Batches per compiled call when the trainer has a ``check`` to call between calls.
CHUNK_STEPS = 32

#: Programs of recent packs, by what they depend on: a pack of a structure seen before traces nothing.
_PROGRAMS: dict[tuple, PackProgram] = {}
_KEEP_PROGRAMS = 4


def pack_key(params: Mapping[str, Any]) -> tuple:
    """What must be equal for trials to share one program: the layers and their widths (a CNN's blocks,
    filters, kernel, pooling and head), activation,
    batch norm, deskew, whether augmentation, elastic distortion and input dropout exist at all,
    optimizer, schedule, batch size and epochs. Rates, dropout, weight decay and augmentation
    magnitudes may differ (they are per-member values)."""
    p = resolve_params(params)
    augment = [float(p[f"augment_{k}"]) > 0 for k in ("shift", "rotation", "scale", "elastic")]
    body = (("cnn", int(p["conv_blocks"]), int(p["filters"]), int(p["kernel_size"]), str(p["pooling"]),
             int(p["head_units"])) if p["architecture"] == "cnn" else tuple(layer_widths(p)))
    return (body, str(p["activation"]), bool(p["batch_norm"]), bool(p["deskew"]), any(augment),
            augment[3], float(p["input_dropout"]) > 0, str(p["optimizer"]), str(p["lr_schedule"]),
            int(p["batch_size"]), int(p["epochs"]))


def packs_on_accelerator() -> bool:
    """Whether packs would train on a GPU or TPU here (Keras on JAX, JAX on an accelerator): what
    ``pack: {members: auto}`` asks."""
    import keras

    return keras.backend.backend() == "jax" and not program.on_cpu()


def chunk_size(steps: int, target: int = CHUNK_STEPS) -> int:
    """Batches per compiled call: the divisor of ``steps`` nearest ``target`` between half and twice it,
    so every call has one length (one program where the length is static), else ``target``.

    >>> chunk_size(375), chunk_size(156), chunk_size(31), chunk_size(401)
    (25, 26, 31, 32)
    """
    divisors = [c for c in range(target // 2, 2 * target + 1) if steps % c == 0]
    return min(divisors, key=lambda c: abs(c - target)) if divisors else min(target, steps)


class PackedTrainer:
    """Trains ``models`` (K compiled models of one structure) together, one epoch per :meth:`run_epoch`.

    Args:
        models: built by ``build_model`` with equal :func:`pack_key` (else ``ValueError``), each after
            its own ``fresh_keras(seed)``, so initial weights and dropout seeds differ.
        x, y, x_val, y_val: training and validation arrays (float32 images, integer labels).
        batch_size, epochs: shared by all members; a partial last batch is dropped, as the sweep's ``fit``.
        weight_decays: per member; ``None`` takes each model's optimizer's own.
        keep_best: keep each member's weights of its best validation epoch (:meth:`result`, :meth:`write_back`).
        check: called between compiled calls of about :data:`CHUNK_STEPS` batches; may raise (a timeout).
        seed: of the shuffling, which all members share.
    """

    #: When a pack with stopped members shrinks: "auto" (when the epochs left pay for the compilation),
    #: "always" or "never".
    shrink = "auto"

    def __init__(self, models: Sequence[Any], x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None,
                 y_val: np.ndarray | None, *, batch_size: int, epochs: int,
                 weight_decays: Sequence[float] | None = None, keep_best: bool = True,
                 check: Callable[[], None] | None = None, seed: int = 0) -> None:
        import jax
        import jax.numpy as jnp

        if not models:
            raise ValueError("a pack needs at least one model")
        signatures = [program.signature(m) for m in models]
        odd = [i for i, s in enumerate(signatures) if s != signatures[0]]
        if odd:
            raise ValueError(f"members {odd} differ from member 0 in structure (pack_key): they cannot share a program")
        self.models, self.template = list(models), models[0]
        self.batch_size, self.epochs, self.check = int(batch_size), int(epochs), check
        self.steps = len(x) // self.batch_size if len(x) >= self.batch_size else 0
        if self.steps == 0:
            raise ValueError(f"{len(x)} training images make no batch of {batch_size}")
        k = len(models)
        opt = self.template.optimizer
        schedule = None if program.is_variable(opt._learning_rate) else opt._learning_rate
        if schedule is not None and getattr(schedule, "warmup_target", None) is not None:
            raise ValueError("packed training supports a constant rate and a cosine schedule without warm-up")
        lr0 = [float(m.optimizer._learning_rate.initial_learning_rate) if schedule is not None else 0.0
               for m in models]
        decays = [float(m.optimizer.weight_decay or 0.0) for m in models] if weight_decays is None else weight_decays
        if len(decays) != k:
            raise ValueError(f"{len(decays)} weight decays for {k} members")
        for m in models:
            if not m.optimizer.built:
                m.optimizer.build(m.trainable_variables)

        def stack(lists: list[list[Any]]) -> list[Any]:
            return [jnp.stack([jnp.asarray(v.value) for v in vs]) for vs in zip(*lists, strict=True)]

        self._state = (stack([m.trainable_variables for m in models]),
                       stack([m.non_trainable_variables for m in models]),
                       stack([m.optimizer.variables for m in models]),
                       jnp.asarray(lr0, jnp.float32), jnp.asarray(decays, jnp.float32))
        self._best = jax.tree.map(jnp.copy, self._state[:2]) if keep_best and x_val is not None else None
        self.keep_best = self._best is not None
        self._x, self._y = program.on_device(x, np.float32), program.on_device(y, np.int32)
        self._val = (None if x_val is None else
                     program.validation_chunks(x_val, y_val, validation_batch_size(len(x_val), self.batch_size)))
        self._key = jax.random.key(seed)
        self._slot: list[int | None] = list(range(k))  # member -> its lane in the stacked state (None: left)
        self._results = [FitResult() for _ in range(k)]
        self._best_value = [-math.inf] * k
        self._left: dict[int, tuple[list[np.ndarray], list[np.ndarray] | None]] = {}  # stopped: (current, best)
        self._program_epochs: list[float] = []  # this program's epochs, seconds (the first one compiled it)
        self.epoch = 0
        decay = opt.weight_decay is not None or any(float(d) > 0 for d in decays)  # traced per member (0 for none)
        key = (signatures[0], self.batch_size, len(x), self.steps, decay, program.on_cpu(),
               program.CPU_GROUP_BYTES)
        self._program = _PROGRAMS.pop(key, None) or PackProgram(
            self.template, batch_size=self.batch_size, n_train=len(x), steps=self.steps, schedule=schedule, decay=decay)
        _PROGRAMS[key] = self._program  # the most recent last
        for old in list(_PROGRAMS)[:-_KEEP_PROGRAMS]:
            del _PROGRAMS[old]

    # ---- epochs ---------------------------------------------------------------------------------
    def run_epoch(self) -> list[dict[str, float] | None]:
        """One epoch for the active members: per member its metrics, None for a member that has stopped."""
        import jax.numpy as jnp

        active = [i for i, s in enumerate(self._slot) if s is not None]
        if not active or self.epoch >= self.epochs:
            return [None] * len(self.models)
        self._maybe_shrink(len(active))
        started = time.perf_counter()
        lanes = len(self._state[3])
        sums = (jnp.zeros(lanes, jnp.float32), jnp.zeros(lanes, jnp.int32))
        perm = self._order()
        chunk = self.steps if self.check is None else chunk_size(self.steps)
        previous = None
        for start in range(0, self.steps, chunk):
            self._state, sums = self._program.train(self._state, sums, perm, start, min(chunk, self.steps - start),
                                                    self._x, self._y)
            if self.check is not None:  # one call queued ahead: the device never waits for the check
                if previous is not None:
                    previous.block_until_ready()
                self.check()
                previous = sums[0]
        loss, correct = (np.asarray(a) for a in sums)
        metrics = {"loss": loss / self.steps, "accuracy": correct / (self.steps * self.batch_size)}
        if self._val is not None:
            val_loss, val_correct = (np.asarray(a) for a in self._program.validate(self._state, *self._val[:3]))
            metrics.update(val_loss=val_loss / self._val[3], val_accuracy=val_correct / self._val[3])
        self.epoch += 1
        seconds = time.perf_counter() - started
        out: list[dict[str, float] | None] = [None] * len(self.models)
        for i in active:
            out[i] = {key: float(values[self._slot[i]]) for key, values in metrics.items()}
            self._record(i, out[i], seconds)
        self._update_best(active, out)
        for i in active:
            loss_i = out[i]["loss"]
            if not math.isfinite(loss_i) or loss_i > DIVERGED_LOSS:
                self._leave(i, f"diverged: loss is {loss_i:.4g} at epoch {self.epoch}")
            elif self.epoch >= self.epochs:
                self._leave(i, None)  # ran every epoch: stop_reason stays None, as fit's
        self._program_epochs.append(seconds)
        return out

    def _order(self) -> Any:
        """This epoch's batches: a permutation of the training images on the device, shared by the members."""
        return self._program.perm(self._key, self.epoch)

    def _record(self, i: int, metrics: dict[str, float], seconds: float) -> None:
        result = self._results[i]
        result.epoch_seconds.append(seconds)
        for key, value in metrics.items():
            result.history.setdefault(key, []).append(value)

    def _update_best(self, active: list[int], out: list[dict[str, float] | None]) -> None:
        if self._best is None:
            return
        improved = [i for i in active if math.isfinite(v := out[i]["val_accuracy"]) and v > self._best_value[i]]
        for i in improved:
            self._best_value[i] = out[i]["val_accuracy"]
            self._results[i].best_epoch = self.epoch
        if improved:
            mask = np.zeros(len(self._state[3]), bool)
            mask[[self._slot[i] for i in improved]] = True
            self._best = self._program.keep(self._best, self._state[:2], mask)

    def _maybe_shrink(self, n_active: int) -> None:
        """Move the active members to a pack of the next power of two when that halves it or more and
        the epochs left save more time than the new program takes to compile."""
        import jax
        import jax.numpy as jnp

        lanes, times = len(self._state[3]), self._program_epochs
        size = 1 << (n_active - 1).bit_length()
        if size * 2 > lanes or self.shrink == "never":
            return
        if self.shrink != "always":
            if len(times) < 2:
                return
            steady = min(times[1:])
            if (self.epochs - self.epoch) * steady * (1 - size / lanes) < times[0] - steady:
                return
        keep = [s for s in self._slot if s is not None]
        pick = jnp.asarray(keep + [keep[0]] * (size - len(keep)))  # spare lanes repeat a member
        self._state = jax.tree.map(lambda a: a[pick], self._state)
        if self._best is not None:
            self._best = jax.tree.map(lambda a: a[pick], self._best)
        lane = {old: new for new, old in enumerate(keep)}
        self._slot = [None if s is None else lane[s] for s in self._slot]
        self._program_epochs = []  # the new program's first epoch compiles it

    # ---- members --------------------------------------------------------------------------------
    def stop(self, i: int, reason: str | None = None) -> None:
        """Member ``i`` stops (pruned or failed; ``reason`` defaults to fit's "stopped by hook"): no recompile,
        its weights are kept, the others go on unchanged."""
        self._leave(i, reason or "stopped by hook")

    def _leave(self, i: int, reason: str | None) -> None:
        slot = self._slot[i]
        if slot is None:
            return
        if reason is not None and self._results[i].stop_reason is None:
            self._results[i].stop_reason = reason
        current = lane_values(self._state[:2], slot)
        best = None if self._best is None else lane_values(self._best, slot)
        self._left[i] = (current, best)
        self._slot[i] = None
        if all(s is None for s in self._slot):  # every member has left: free the device's copies now
            self._state = self._best = None

    def _weights(self, i: int, best: bool) -> list[np.ndarray]:
        """Member ``i``'s trainable then non-trainable values (its best epoch's if ``best`` and one was kept)."""
        best = best and self.keep_best and self._results[i].best_epoch is not None
        if self._slot[i] is None:
            current, kept = self._left[i]
            return kept if best and kept is not None else current
        source = self._best if best else self._state[:2]
        return lane_values(source, self._slot[i])

    def result(self, i: int) -> FitResult:
        """Member ``i``'s :class:`FitResult`, as ``fit`` would have returned it (best weights included)."""
        r = self._results[i]
        best = None
        if self.keep_best and r.best_epoch is not None:
            values, model = self._weights(i, True), self.models[i]
            position = {id(v): n for n, v in enumerate([*model.trainable_variables, *model.non_trainable_variables])}
            best = [values[position[id(v)]] for v in model.weights]
        return FitResult(history={k: list(v) for k, v in r.history.items()}, epoch_seconds=list(r.epoch_seconds),
                         stop_reason=r.stop_reason, best_weights=best, best_epoch=r.best_epoch)

    def best_value(self, i: int) -> float:
        """Member ``i``'s best validation accuracy so far (``-inf`` before its first finite one)."""
        return self._best_value[i]

    def write_back(self, i: int, best: bool = True) -> Any:
        """``models[i]`` with member ``i``'s best-epoch (or current) weights, ready to keep, measure or save."""
        model = self.models[i]
        for variable, value in zip([*model.trainable_variables, *model.non_trainable_variables],
                                   self._weights(i, best), strict=True):
            variable.assign(value)
        return model
