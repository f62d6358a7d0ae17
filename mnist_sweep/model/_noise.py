"""Uniform noise for dropout masks and augmentation draws inside the compiled step: a counter-based
integer hash (JAX only), far cheaper to compile and run than Keras's Threefry."""

from __future__ import annotations

from typing import Any

import numpy as np


def lowbias32(x: Any) -> Any:
    """A 32-bit integer hash with full avalanche (Wellons' lowbias32); ``x`` is uint32, arithmetic wraps."""
    import jax.numpy as jnp

    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hash_uniform(seed: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """Uniform [0, 1) noise of ``shape`` from a 2-word seed: each element's index hashed twice with the
    seed's words (a counter-based generator, like Philox or Threefry, with far fewer rounds).

    Why: Keras's JAX dropout draws Threefry-2x32 bits, 20 rounds per pair of words; XLA compiles that
    into large fused loops (about a second of compilation per new model here) and running it cost
    about as much as the matrix products of the quick sweep's models. Dropout needs independent
    masks, not cryptographic streams: two rounds of a full-avalanche hash pass the tests in
    ``tests/model/test_layers.py`` (rate, independence between elements and between steps).
    """
    import jax.numpy as jnp
    from jax import lax

    seed = jnp.asarray(seed).astype(jnp.uint32)
    count = int(np.prod(shape))
    index = lax.iota(jnp.uint32, count)
    bits = lowbias32(lowbias32(index ^ lowbias32(seed[0] + jnp.uint32(0x9E3779B9))) + lowbias32(seed[1]))
    return ((bits >> 8).astype(dtype) * (1.0 / (1 << 24))).reshape(shape)
