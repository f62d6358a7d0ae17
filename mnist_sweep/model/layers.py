"""Keras pieces whose values are data, not code, so that XLA compiles one program for many trials.

On the JAX backend a trial's training step is compiled by XLA (about a second on this machine's
2 cores), and the compiled program is reused, in this process and through JAX's persistent
compilation cache, by every later trial whose program is the same. Keras bakes a ``Dropout``
rate into the program as a constant, so trials that differ only in dropout compiled anew each
time; and Keras's weight initializers are small jitted functions compiled once per weight shape
(about 0.6 s each, per process). Here:

- :class:`VariableDropout` keeps its rate in a non-trainable weight: the rate reaches the
  compiled step as an input, and trials of one structure share one program, rate 0 included
  (it keeps every element and rescales none: an exact identity); on JAX its masks come from a
  counter-based integer hash rather than Threefry (cheaper to compile and to run);
- :class:`NumpyGlorotUniform` draws initial weights with NumPy (the same distribution as Keras's
  default ``glorot_uniform``), so building a model compiles nothing.

Both are registered Keras serializables: a saved model loads once this module is imported.
Import this module only after the backend is chosen (:func:`mnist_sweep._base.settings.use_backend`).

Example:
    >>> layer = VariableDropout(0.3)
    >>> float(layer.rate)
    0.3
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from mnist_sweep.model._noise import hash_uniform
from mnist_sweep.model._warp import bilinear, gaussian_matrix, offsets


@keras.saving.register_keras_serializable(package="mnist_sweep")
class VariableDropout(keras.layers.Layer):
    """Inverted dropout at ``rate`` during training, identity at inference; the rate is a weight.

    Args:
        rate: fraction of inputs zeroed during training, in [0, 1).
        seed: seed of the dropout masks; ``None`` draws from Keras's global seed generator.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        self._rate = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.rate),
                                     trainable=False, name="rate")

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return inputs
        keep = 1.0 - keras.ops.cast(self._rate, inputs.dtype)
        if keras.backend.backend() == "jax":
            noise = hash_uniform(self.seed_generator.next(), inputs.shape, inputs.dtype)
        else:
            noise = keras.random.uniform(keras.ops.shape(inputs), dtype=inputs.dtype, seed=self.seed_generator)
        return keras.ops.where(noise < keep, inputs / keep, keras.ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mnist_sweep")
class ClassNames(keras.layers.Layer):
    """An identity on the class probabilities that carries what a saved model needs to be used: the
    classes' names, so it says what each output means (``predict`` and ``serve`` print the name),
    and the preprocessing its training images went through (``mnist`` or ``resize``, see
    :mod:`mnist_sweep.data.images`), so ``predict`` and ``serve`` make an image file the same
    pixels. A model saved before the preprocessing was recorded loads with ``mnist``, what
    ``predict`` applied to every model then."""

    def __init__(self, names: list[str] | tuple[str, ...], preprocessing: str = "mnist", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = [str(n) for n in names]
        self.preprocessing = str(preprocessing)

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "names": self.names, "preprocessing": self.preprocessing}


#: Smoothness of the elastic distortion's displacement field, in pixels (Simard et al. 2003 used 4).
ELASTIC_SIGMA = 4.0


@keras.saving.register_keras_serializable(package="mnist_sweep")
class RandomAffine(keras.layers.Layer):
    """Random shift, rotation and scaling of each training image; identity at inference.

    Takes flattened square images (``n x side*side``, MNIST's ``n x 784``) and returns them in the
    same layout, each warped by its own transform drawn per step: a shift of up to ``shift``
    pixels along each axis, a rotation of up to ``rotation`` degrees either way and a scaling by
    a factor in ``1 +- scale``, about the image's centre, with bilinear interpolation and black
    (0) outside. The three magnitudes are weights, inputs of the compiled step like
    :class:`VariableDropout`'s rate, so trials that differ only in them share one program.

    With ``elastic`` > 0 each image is also distorted elastically (Simard, Steinkraus and Platt
    2003): a random displacement field, uniform in [-1, 1] per pixel and axis, smoothed by a
    Gaussian of :data:`ELASTIC_SIGMA` pixels and multiplied by ``elastic`` (their alpha; 34 in the
    paper), is added to the affine sampling grid. The smoothing is two 28 x 28 matrix products per
    image, so it costs far less than the network's first layer.

    Args:
        shift: largest shift in pixels (>= 0).
        rotation: largest rotation in degrees (>= 0).
        scale: largest relative change of size, in [0, 1).
        elastic: strength (alpha) of the elastic distortion, 0 for none.
        seed: seed of the transforms; ``None`` draws from Keras's global seed generator.
    """

    def __init__(self, shift: float = 0.0, rotation: float = 0.0, scale: float = 0.0, seed: int | None = None,
                 elastic: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if min(shift, rotation, scale, elastic) < 0 or scale >= 1:
            raise ValueError(f"augmentation needs shift >= 0, rotation >= 0, 0 <= scale < 1, elastic >= 0; got "
                             f"shift={shift}, rotation={rotation}, scale={scale}, elastic={elastic}")
        self.shift, self.rotation, self.scale = float(shift), float(rotation), float(scale)
        self.elastic = float(elastic)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape: Any) -> None:
        side = int(round(float(input_shape[-1]) ** 0.5))
        if side * side != input_shape[-1]:
            raise ValueError(f"RandomAffine wants flattened square images, got {input_shape[-1]} values")
        self.side = side
        self._magnitudes = self.add_weight(
            shape=(3,), initializer=keras.initializers.Constant([self.shift, np.deg2rad(self.rotation), self.scale]),
            trainable=False, name="magnitudes")
        if self.elastic > 0:  # its own weight: models saved before elastic existed still load
            self._elastic = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.elastic),
                                            trainable=False, name="elastic")

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return inputs
        ops = keras.ops
        n, side = ops.shape(inputs)[0], self.side
        if keras.backend.backend() == "jax":
            u = hash_uniform(self.seed_generator.next(), (inputs.shape[0], 4), inputs.dtype) * 2.0 - 1.0
        else:
            u = keras.random.uniform((n, 4), minval=-1.0, maxval=1.0, dtype=inputs.dtype, seed=self.seed_generator)
        magnitudes = ops.cast(self._magnitudes, inputs.dtype)
        angle, zoom = u[:, 0:1] * magnitudes[1], 1.0 + u[:, 1:2] * magnitudes[2]
        dx, dy = u[:, 2:3] * magnitudes[0], u[:, 3:4] * magnitudes[0]
        cos, sin = ops.cos(angle) / zoom, ops.sin(angle) / zoom
        centre, r, c = offsets(side)
        # each output pixel samples the input at centre + M (p - centre) - d, M a scaled rotation
        src_rows, src_cols = centre + sin * c + cos * r - dy, centre + cos * c - sin * r - dx
        if self.elastic > 0:
            d_rows, d_cols = self._displacements(inputs, side)
            src_rows, src_cols = src_rows + d_rows, src_cols + d_cols
        return bilinear(inputs, src_rows, src_cols, side)

    def _displacements(self, inputs: Any, side: int) -> tuple[Any, Any]:
        """Smoothed random displacements (rows, columns), ``n x side*side`` each, scaled by alpha."""
        ops = keras.ops
        shape = (inputs.shape[0], 2, side, side)
        if keras.backend.backend() == "jax":
            noise = hash_uniform(self.seed_generator.next(), shape, inputs.dtype) * 2.0 - 1.0
        else:
            noise = keras.random.uniform((ops.shape(inputs)[0], 2, side, side), minval=-1.0, maxval=1.0,
                                         dtype=inputs.dtype, seed=self.seed_generator)
        gauss = ops.convert_to_tensor(gaussian_matrix(side, ELASTIC_SIGMA), dtype=inputs.dtype)
        smooth = ops.einsum("ij,nkjl,ml->nkim", gauss, noise, gauss) * ops.cast(self._elastic, inputs.dtype)
        smooth = ops.reshape(smooth, (-1, 2, side * side))
        return smooth[:, 0], smooth[:, 1]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shift": self.shift, "rotation": self.rotation, "scale": self.scale,
                "elastic": self.elastic, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mnist_sweep")
class Deskew(keras.layers.Layer):
    """Straighten each image's slant and centre it on its centre of mass, in training and inference.

    The classic MNIST preprocessing (the "deskewing" rows of LeCun et al.'s results table): from the
    image's intensity moments, its centre of mass ``(m_r, m_c)`` and its
    skew ``a = cov(row, col) / var(row)``; each output pixel ``(r, c)`` samples the input at
    ``(m_r + r', m_c + c' + a r')`` with ``r', c'`` the offsets from the image's centre (bilinear, 0
    outside). A digit written at a slant comes out upright and centred, so the network spends no
    capacity on slant. Part of the model (saved with it), so ``predict`` and ``serve`` deskew too.
    Takes and returns flattened square images (``n x side*side``). An empty image passes unchanged.
    """

    def build(self, input_shape: Any) -> None:
        side = int(round(float(input_shape[-1]) ** 0.5))
        if side * side != input_shape[-1]:
            raise ValueError(f"Deskew wants flattened square images, got {input_shape[-1]} values")
        self.side = side

    def call(self, inputs: Any) -> Any:
        ops, side = keras.ops, self.side
        centre, r, c = offsets(side)
        total = ops.sum(inputs, axis=1, keepdims=True)
        total = ops.where(total <= 1e-6, 1.0, total)  # a blank image: every moment 0, so no shift and no shear
        m_r = ops.sum(inputs * r, axis=1, keepdims=True) / total
        m_c = ops.sum(inputs * c, axis=1, keepdims=True) / total
        var_r = ops.sum(inputs * (r - m_r) ** 2, axis=1, keepdims=True) / total
        cov = ops.sum(inputs * (r - m_r) * (c - m_c), axis=1, keepdims=True) / total
        skew = ops.where(var_r <= 1e-6, 0.0, cov / ops.where(var_r <= 1e-6, 1.0, var_r))
        return bilinear(inputs, centre + m_r + r, centre + m_c + c + skew * r, side)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@keras.saving.register_keras_serializable(package="mnist_sweep")
class Pool2x2(keras.layers.Layer):
    """2 x 2 pooling (``max`` or ``average``) of ``side x side x channels`` images, an odd last row and
    column dropped as Keras's ``valid`` pooling drops them. Written as a reshape and a reduction, not a
    pooling window: ONNX Runtime refuses the max-pooling node a channels-last window exports to."""

    def __init__(self, mode: str = "max", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("max", "average"):
            raise ValueError(f"pooling mode must be 'max' or 'average', got {mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        _, height, width, channels = inputs.shape
        even = inputs[:, : height // 2 * 2, : width // 2 * 2, :]
        blocks = keras.ops.reshape(even, (-1, height // 2, 2, width // 2, 2, channels))
        reduce = keras.ops.max if self.mode == "max" else keras.ops.mean
        return reduce(blocks, axis=(2, 4))

    def compute_output_shape(self, input_shape: Any) -> Any:
        batch, height, width, channels = input_shape
        return (batch, height // 2, width // 2, channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="mnist_sweep")
class NumpyGlorotUniform(keras.initializers.Initializer):
    """Glorot (Xavier) uniform: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)), drawn by NumPy.

    Args:
        seed: seed of the draw; ``None`` takes one from NumPy's global generator (which
            :func:`mnist_sweep.model.training.fresh_keras` seeds), so a seeded build is reproducible.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = int(np.random.randint(2**31 - 1)) if seed is None else int(seed)

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        fan_in, fan_out = _fans(tuple(shape))
        limit = np.sqrt(6.0 / max(1.0, fan_in + fan_out))
        values = np.random.default_rng(self.seed).uniform(-limit, limit, size=tuple(shape))
        return values.astype(keras.backend.standardize_dtype(dtype or keras.config.floatx()))

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = float(np.prod(shape[:-2])) if len(shape) > 2 else 1.0
    return shape[-2] * receptive, shape[-1] * receptive
