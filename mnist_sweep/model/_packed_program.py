"""The compiled side of packed training (:mod:`mnist_sweep.model.packed`): the train loop, validation
and best-weights update of K stacked members, written once on the template model with Keras 3's
stateless API; plus what checks and feeds a pack (structure signature, data on the device).

A pack's state is the tuple ``(trainable, non_trainable, optimizer, lr0, weight_decay)``: three
lists of arrays stacked to ``(lanes, ...)`` in the template's variable order, and two ``(lanes,)``
vectors. Jax and Keras are imported inside functions: importing :mod:`mnist_sweep.model.packed` for
:func:`~mnist_sweep.model.packed.pack_key` loads neither.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

#: Layer settings that are variables, seeds or names: members may differ in them.
_MEMBER_VALUES = frozenset({"name", "seed", "rate", "shift", "rotation", "scale", "elastic", "kernel_initializer"})

#: On a CPU, the most bytes of weights, optimizer state and gradients that members train in lockstep.
CPU_GROUP_BYTES = 16 << 20

_DEVICE_ARRAYS: dict[int, tuple[Any, Any]] = {}  # id(numpy array) -> (weak reference, device copy)


class PackProgram:
    """The jitted functions of one pack: ``train`` (``count`` batches from ``start`` of the epoch's
    permutation, loss and correct answers summed per lane; one program per ``count`` where
    :attr:`unroll` > 1), ``validate``, ``keep`` (best weights where a mask says) and ``perm`` (an
    epoch's shuffled, truncated order, shared by all members).

    Args:
        template: the pack's member 0; its layers and optimizer trace the step for every member.
        batch_size, n_train, steps: batch, training images, batches per epoch.
        schedule: the template's learning-rate schedule (a per-member start is traced in), or None.
        decay: weight decay is traced in per member (the optimizer's own float is set aside).
    """

    def __init__(self, template: Any, *, batch_size: int, n_train: int, steps: int, schedule: Any,
                 decay: bool) -> None:
        import jax
        import jax.numpy as jnp
        from jax import lax

        self.template, self.schedule, self.decay = template, schedule, decay
        cpu = on_cpu()
        # On a CPU, two steps per loop iteration: XLA's CPU fusion recomputes Adam's new moments from the
        # old ones inside the weights' update, and a loop then copies every moment and weight each step
        # to keep the old ones (in-place updates of the carried state); in an unrolled pair the first
        # step's outputs are temporaries, and the copies go. It takes a loop of static length.
        self.unroll = 2 if cpu else 1
        # Lanes trained in lockstep (vmapped); groups of them run one after the other through the call's
        # batches. On a CPU a group's weights, moments and gradients stay within CPU_GROUP_BYTES, so they
        # stay in cache across its steps (model 4 lockstep at K=8 ran 10% slower per member than alone).
        self.group = max(1, CPU_GROUP_BYTES // member_bytes(template)) if cpu else 1 << 30

        def member_run(member: tuple, perm: Any, start: Any, count: Any, x: Any, y: Any) -> tuple:
            """One member's state and sums (unstacked) through ``count`` batches from ``start``."""
            def body(carry: tuple, j: Any) -> tuple:
                (tv, ntv, ov, lr0, wd), (loss, correct) = carry
                idx = lax.dynamic_slice_in_dim(perm, (start + j) * batch_size, batch_size)
                tv, ntv, ov, step_loss, step_correct = self._member_step(tv, ntv, ov, lr0, wd, jnp.take(x, idx, 0),
                                                                         jnp.take(y, idx, 0))
                return ((tv, ntv, ov, lr0, wd), (loss + step_loss, correct + step_correct)), None
            if self.unroll > 1:  # count is static here
                return lax.scan(body, member, jnp.arange(count), unroll=self.unroll)[0]
            return lax.fori_loop(0, count, lambda j, carry: body(carry, j)[0], member)

        def train(state: tuple, sums: tuple, perm: Any, start: Any, count: Any, x: Any, y: Any) -> tuple:
            return _over_lanes(lambda member: member_run(member, perm, start, count, x, y), (state, sums), self.group)

        def validate(state: tuple, xs: Any, ys: Any, ws: Any) -> tuple:
            return _over_lanes(lambda member: self._member_val(*member, xs, ys, ws), state, 1 << 30)

        def keep(best: Any, current: Any, mask: Any) -> Any:
            return jax.tree.map(lambda b, c: jnp.where(mask.reshape((-1,) + (1,) * (c.ndim - 1)), c, b), best, current)

        def perm(key: Any, epoch: Any) -> Any:
            return jax.random.permutation(jax.random.fold_in(key, epoch), n_train)[: steps * batch_size]

        self.train = jax.jit(train, donate_argnums=(0,), static_argnums=(4,) if self.unroll > 1 else ())
        self.validate = jax.jit(validate)
        self.keep = jax.jit(keep, donate_argnums=(0,))
        self.perm = jax.jit(perm)

    def _member_step(self, tv: Any, ntv: Any, ov: Any, lr0: Any, wd: Any, xb: Any, yb: Any) -> tuple:
        """One member's training step, as Keras's JAX trainer takes it: forward with its own
        non-trainable state (dropout rates and seeds, batch-norm statistics), mean sparse cross-entropy,
        the optimizer's stateless update."""
        import jax
        import jax.numpy as jnp
        import keras

        model = self.template

        def loss_of(tv: Any, ntv: Any) -> tuple:
            y_pred, ntv = model.stateless_call(tv, ntv, xb, training=True)
            return jnp.mean(keras.losses.sparse_categorical_crossentropy(yb, y_pred)), (ntv, y_pred)

        (loss, (ntv, y_pred)), grads = jax.value_and_grad(loss_of, has_aux=True)(tv, ntv)
        with self._member_floats(lr0, wd):
            tv, ov = model.optimizer.stateless_apply(ov, grads, tv)
        return tv, ntv, ov, loss, jnp.sum(jnp.argmax(y_pred, -1) == yb)

    def _member_val(self, tv: Any, ntv: Any, ov: Any, lr0: Any, wd: Any, xs: Any, ys: Any, ws: Any) -> tuple:
        """One member's summed validation loss and correct answers over the padded chunks (weight 0 on padding)."""
        import jax.numpy as jnp
        import keras
        from jax import lax

        def chunk(inputs: tuple) -> tuple:
            xb, yb, wb = inputs
            y_pred, _ = self.template.stateless_call(tv, ntv, xb, training=False)
            loss = keras.losses.sparse_categorical_crossentropy(yb, y_pred)
            return jnp.sum(loss * wb), jnp.sum((jnp.argmax(y_pred, -1) == yb) * wb)

        loss, correct = lax.map(chunk, (xs, ys, ws))
        return jnp.sum(loss), jnp.sum(correct)

    @contextlib.contextmanager
    def _member_floats(self, lr0: Any, wd: Any) -> Iterator[None]:
        """While tracing: this member's schedule start and weight decay in place of the template's Python
        floats, so Keras's own formulas (``CosineDecay``, ``w - w * wd * lr``) apply the member's values."""
        swaps = []
        if self.schedule is not None:
            swaps.append((self.schedule, "initial_learning_rate", lr0))
        if self.decay:
            swaps.append((self.template.optimizer, "weight_decay", wd))
        saved = [(obj, name, getattr(obj, name)) for obj, name, _ in swaps]
        try:
            for obj, name, value in swaps:
                setattr(obj, name, value)
            yield
        finally:
            for obj, name, value in saved:
                setattr(obj, name, value)


def _over_lanes(fn: Callable, stacked: Any, group: int) -> Any:
    """``fn`` of one member over the members stacked in ``stacked`` (``(lanes, ...)`` arrays): in lockstep
    (vmapped) when they fit one group, else groups of ``group`` one after the other; one lane runs
    ``fn`` unbatched (about 5% faster than a vmap of one)."""
    import jax
    from jax import lax

    lanes = len(jax.tree.leaves(stacked)[0])
    if lanes == 1:
        return jax.tree.map(lambda a: a[None], fn(jax.tree.map(lambda a: a[0], stacked)))
    if group >= lanes:
        return jax.vmap(fn)(stacked)
    return lax.map(fn, stacked, batch_size=group if group > 1 else None)


def lane_values(stacked: Any, lane: int) -> list[np.ndarray]:
    """One lane of stacked arrays (a pack's weights), on the host, in the tree's order: one compiled
    gather and one transfer, not one per array."""
    import jax

    return [np.asarray(a) for a in jax.device_get(jax.tree.leaves(_take_lane()(stacked, lane)))]


@functools.cache
def _take_lane() -> Callable[[Any, int], Any]:
    import jax

    return jax.jit(lambda stacked, lane: jax.tree.map(lambda a: a[lane], stacked))


def member_bytes(model: Any) -> int:
    """Bytes one member's step works on: weights, gradients and the (built) optimizer's state, float32."""
    size = lambda variables: sum(int(np.prod(v.shape)) for v in variables)  # noqa: E731
    return 4 * (2 * size(model.trainable_variables) + size(model.optimizer.variables))


def on_cpu() -> bool:
    """Whether JAX computes on the CPU (the loop is unrolled and members grouped there)."""
    import jax

    return jax.default_backend() == "cpu"


def is_variable(value: Any) -> bool:
    import keras

    return isinstance(value, keras.Variable)


def signature(model: Any) -> tuple:
    """What the compiled program depends on: each layer's kind, settings and variable shapes, the
    optimizer's kind and settings, the schedule's kind and settings (learning rates and weight decay aside)."""
    layers = []
    for layer in model.layers:
        config = {k: v for k, v in layer.get_config().items() if k not in _MEMBER_VALUES}
        shapes = tuple(tuple(v.shape) for v in layer.variables)
        layers.append((type(layer).__name__, repr(sorted(config.items())), shapes))
    opt = model.optimizer
    settings = {k: v for k, v in opt.get_config().items() if k not in ("name", "learning_rate", "weight_decay")}
    rate = opt._learning_rate
    schedule = None if is_variable(rate) else (type(rate).__name__, repr(sorted(
        (k, v) for k, v in rate.get_config().items() if k != "initial_learning_rate")))
    return tuple(layers), type(opt).__name__, repr(sorted(settings.items())), schedule


def on_device(array: np.ndarray, dtype: Any) -> Any:
    """``array`` on the default device, uploaded once while the array lives (a sweep's packs share it)."""
    import jax.numpy as jnp

    cached = _DEVICE_ARRAYS.get(id(array))
    if cached is not None and cached[0]() is array:
        return cached[1]
    for key in [k for k, (ref, _) in _DEVICE_ARRAYS.items() if ref() is None]:
        del _DEVICE_ARRAYS[key]
    device = jnp.asarray(np.asarray(array, dtype))
    _DEVICE_ARRAYS[id(array)] = (weakref.ref(array), device)
    return device


def validation_chunks(x: np.ndarray, y: np.ndarray, size: int) -> tuple[Any, Any, Any, int]:
    """The validation set on the device in chunks of ``size``, zero-padded, a weight of 0 on the padding;
    and its size."""
    import jax.numpy as jnp

    n, chunks = len(x), -(-len(x) // size)
    pad = chunks * size - n
    xs = np.concatenate([np.asarray(x, np.float32), np.zeros((pad, x.shape[1]), np.float32)])
    ys = np.concatenate([np.asarray(y, np.int32), np.zeros(pad, np.int32)])
    ws = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return (jnp.asarray(xs.reshape(chunks, size, -1)), jnp.asarray(ys.reshape(chunks, size)),
            jnp.asarray(ws.reshape(chunks, size)), n)
