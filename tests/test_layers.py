"""The model's custom layers: dropout whose rate is data, and a NumPy Glorot initializer."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_sweep.model import build_model, count_params
from mnist_sweep.settings import use_backend


def test_variable_dropout_drops_at_its_rate_and_keeps_the_mean() -> None:
    use_backend()
    import keras

    from mnist_sweep.layers import VariableDropout

    layer = VariableDropout(0.3, seed=1)
    x = np.ones((200, 500), dtype="float32")
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert abs((out == 0).mean() - 0.3) < 0.01
    assert abs(out.mean() - 1.0) < 0.02  # kept inputs are scaled by 1 / (1 - rate)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_dropout_rate_is_a_variable_so_one_program_serves_every_rate() -> None:
    use_backend()
    from mnist_sweep.layers import VariableDropout

    model = build_model({"hidden_layers": 1, "units": 32, "dropout": 0.25})
    (dropout,) = [layer for layer in model.layers if isinstance(layer, VariableDropout)]
    assert dropout.rate == pytest.approx(0.25)
    assert [w.name for w in dropout.non_trainable_weights] == ["rate"]
    assert count_params(model) == 784 * 32 + 32 + 32 * 10 + 10  # the rate is not a parameter


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_variable_dropout_refuses_rates_outside_0_1(rate: float) -> None:
    use_backend()
    from mnist_sweep.layers import VariableDropout

    with pytest.raises(ValueError, match="dropout rate"):
        VariableDropout(rate)


def test_numpy_glorot_uniform_has_keras_limits_and_is_seeded() -> None:
    use_backend()
    from mnist_sweep.layers import NumpyGlorotUniform

    values = NumpyGlorotUniform(seed=3)((784, 512))
    limit = np.sqrt(6 / (784 + 512))
    assert values.dtype == np.float32 and np.abs(values).max() <= limit
    assert np.abs(values).max() > 0.99 * limit and abs(values.std() - limit / np.sqrt(3)) < 1e-3
    np.testing.assert_array_equal(values, NumpyGlorotUniform(seed=3)((784, 512)))
    assert not np.array_equal(values, NumpyGlorotUniform(seed=4)((784, 512)))


def test_a_saved_model_with_these_layers_loads_and_predicts_the_same(tmp_path) -> None:
    use_backend()
    from mnist_sweep.inference import load_model

    model = build_model({"hidden_layers": 1, "units": 16, "dropout": 0.4, "input_dropout": 0.1})
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert [layer.rate for layer in loaded.layers if hasattr(layer, "rate")] == pytest.approx([0.1, 0.4])


def test_dropout_masks_are_independent_across_elements_and_steps() -> None:
    use_backend()
    import keras

    from mnist_sweep.layers import VariableDropout

    layer = VariableDropout(0.5, seed=7)
    x = np.ones((256, 512), dtype="float32")
    first, second = (keras.ops.convert_to_numpy(layer(x, training=True)) != 0 for _ in range(2))
    for mask in (first, second):
        assert abs(mask.mean() - 0.5) < 0.01
        # neighbours along both axes are uncorrelated (a weak generator shows stripes here)
        assert abs(np.corrcoef(mask[:, 1:].ravel(), mask[:, :-1].ravel())[0, 1]) < 0.02
        assert abs(np.corrcoef(mask[1:].ravel(), mask[:-1].ravel())[0, 1]) < 0.02
    assert abs((first & second).mean() - 0.25) < 0.01  # each step draws a new mask
    assert abs(np.corrcoef(first.sum(axis=0), second.sum(axis=0))[0, 1]) < 0.2  # no unit favoured twice


def test_dropout_at_rate_zero_is_an_exact_identity_in_training() -> None:
    import numpy as np

    from mnist_sweep.layers import VariableDropout

    x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
    out = np.asarray(VariableDropout(0.0, seed=3)(x, training=True))
    assert np.array_equal(out, x)
