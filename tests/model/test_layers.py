"""The model's custom layers: dropout whose rate is data, and a NumPy Glorot initializer."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_sweep._base.settings import use_backend
from mnist_sweep.model.factory import build_model, count_params


def test_variable_dropout_drops_at_its_rate_and_keeps_the_mean() -> None:
    use_backend()
    import keras

    from mnist_sweep.model.layers import VariableDropout

    layer = VariableDropout(0.3, seed=1)
    x = np.ones((200, 500), dtype="float32")
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert abs((out == 0).mean() - 0.3) < 0.01
    assert abs(out.mean() - 1.0) < 0.02  # kept inputs are scaled by 1 / (1 - rate)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_dropout_rate_is_a_variable_so_one_program_serves_every_rate() -> None:
    use_backend()
    from mnist_sweep.model.layers import VariableDropout

    model = build_model({"hidden_layers": 1, "units": 32, "dropout": 0.25})
    (dropout,) = [layer for layer in model.layers if isinstance(layer, VariableDropout)]
    assert dropout.rate == pytest.approx(0.25)
    assert [w.name for w in dropout.non_trainable_weights] == ["rate"]
    assert count_params(model) == 784 * 32 + 32 + 32 * 10 + 10  # the rate is not a parameter


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_variable_dropout_refuses_rates_outside_0_1(rate: float) -> None:
    use_backend()
    from mnist_sweep.model.layers import VariableDropout

    with pytest.raises(ValueError, match="dropout rate"):
        VariableDropout(rate)


def test_numpy_glorot_uniform_has_keras_limits_and_is_seeded() -> None:
    use_backend()
    from mnist_sweep.model.layers import NumpyGlorotUniform

    values = NumpyGlorotUniform(seed=3)((784, 512))
    limit = np.sqrt(6 / (784 + 512))
    assert values.dtype == np.float32 and np.abs(values).max() <= limit
    assert np.abs(values).max() > 0.99 * limit and abs(values.std() - limit / np.sqrt(3)) < 1e-3
    np.testing.assert_array_equal(values, NumpyGlorotUniform(seed=3)((784, 512)))
    assert not np.array_equal(values, NumpyGlorotUniform(seed=4)((784, 512)))


def test_a_saved_model_with_these_layers_loads_and_predicts_the_same(tmp_path) -> None:
    use_backend()
    from mnist_sweep.model.saving import load_model

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

    from mnist_sweep.model.layers import VariableDropout

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

    from mnist_sweep.model.layers import VariableDropout

    x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
    out = np.asarray(VariableDropout(0.0, seed=3)(x, training=True))
    assert np.array_equal(out, x)


def _digit_batch(n: int) -> np.ndarray:
    """``n`` copies of a 28 x 28 image with one bright 6 x 6 square in the middle, flattened."""
    image = np.zeros((28, 28), dtype="float32")
    image[11:17, 11:17] = 1.0
    return np.tile(image.reshape(1, -1), (n, 1))


def _centre_of_mass(flat: np.ndarray) -> np.ndarray:
    images = flat.reshape(-1, 28, 28)
    rows, cols = np.indices((28, 28))
    total = images.sum(axis=(1, 2))
    return np.stack([(images * rows).sum(axis=(1, 2)) / total, (images * cols).sum(axis=(1, 2)) / total], axis=1)


def test_augmentation_only_touches_training_batches() -> None:
    use_backend()
    import keras

    from mnist_sweep.model.layers import RandomAffine

    x = _digit_batch(64)
    layer = RandomAffine(shift=2.0, rotation=10.0, scale=0.1, seed=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)  # validation, test
    still = RandomAffine(seed=0)  # all magnitudes 0: the identity warp samples each pixel exactly
    np.testing.assert_allclose(keras.ops.convert_to_numpy(still(x, training=True)), x, atol=1e-6)


def test_shifts_move_each_image_by_up_to_the_given_pixels() -> None:
    use_backend()
    import keras

    from mnist_sweep.model.layers import RandomAffine

    x = _digit_batch(256)
    layer = RandomAffine(shift=2.0, seed=3)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    moved = _centre_of_mass(out) - _centre_of_mass(x)
    assert np.abs(moved).max() <= 2.0 + 1e-4  # never further than the bound, on either axis
    assert np.abs(moved).max() > 1.5 and np.std(moved[:, 0]) > 0.5  # and each image its own way
    np.testing.assert_allclose(out.sum(axis=1), x.sum(axis=1), rtol=1e-4)  # the square stays whole inside
    again = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(again, out)  # a new draw at every step


def test_rotation_and_scaling_keep_the_centre_and_change_the_size() -> None:
    use_backend()
    import keras

    from mnist_sweep.model.layers import RandomAffine

    x = _digit_batch(256)
    out = keras.ops.convert_to_numpy(RandomAffine(rotation=20.0, scale=0.3, seed=5)(x, training=True))
    np.testing.assert_allclose(_centre_of_mass(out), _centre_of_mass(x), atol=0.05)  # about the centre
    ink = out.sum(axis=1) / x.sum(axis=1)  # area grows with the square of the scale
    assert 0.4 < ink.min() < 0.8 and 1.2 < ink.max() < 1.8  # factors 0.7 to 1.3, on a grid of pixels


def test_augmented_models_share_one_program_and_save_their_magnitudes(tmp_path) -> None:
    use_backend()
    from mnist_sweep.model.layers import RandomAffine
    from mnist_sweep.model.saving import load_model

    plain = build_model({"hidden_layers": 1, "units": 16})
    model = build_model({"hidden_layers": 1, "units": 16, "augment_shift": 2, "augment_rotation": 8})
    assert not any(isinstance(layer, RandomAffine) for layer in plain.layers)
    assert count_params(model) == count_params(plain)  # the magnitudes are not parameters
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    layer = next(layer for layer in loaded.layers if isinstance(layer, RandomAffine))
    assert (layer.shift, layer.rotation, layer.scale) == (2.0, 8.0, 0.0)
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_an_augmented_model_trains_and_validates_on_untouched_images(tiny_dataset) -> None:
    use_backend()
    from mnist_sweep.model.training import fit, fresh_keras

    fresh_keras(0)
    model = build_model({"hidden_layers": 1, "units": 64, "epochs": 2, "augment_shift": 2.0, "augment_rotation": 10.0,
                         "augment_scale": 0.1})
    ds = tiny_dataset
    result = fit(model, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=128, epochs=2)
    assert result.history["val_accuracy"][-1] > 0.6  # it learns from warped digits
    # validation and test images are never warped: evaluating twice gives the same figures
    first = model.evaluate(ds.x_val, ds.y_val, verbose=0, return_dict=True)
    again = model.evaluate(ds.x_val, ds.y_val, verbose=0, return_dict=True)
    assert first == again and first["accuracy"] == pytest.approx(result.history["val_accuracy"][-1], abs=1e-6)


def test_elastic_distortion_warps_locally_and_keeps_the_digit_in_place() -> None:
    use_backend()
    import keras

    from mnist_sweep.model.layers import RandomAffine

    x = _digit_batch(256)
    layer = RandomAffine(elastic=34.0, seed=7)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(out, x, atol=1e-3)  # the square is bent ...
    moved = np.abs(_centre_of_mass(out) - _centre_of_mass(x))
    assert moved.mean() < 1.5 and moved.max() < 6.0  # ... about where it was (alpha 34: ~1.4 px per pixel)
    assert np.std(out.sum(axis=1) / x.sum(axis=1)) > 0.01  # each image its own field
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)  # never at inference
    weak = keras.ops.convert_to_numpy(RandomAffine(elastic=4.0, seed=7)(x, training=True))
    assert np.abs(weak - x).mean() < np.abs(out - x).mean()  # alpha sets the strength


def test_a_model_saved_with_elastic_distortion_loads_with_it(tmp_path) -> None:
    use_backend()
    from mnist_sweep.model.layers import RandomAffine
    from mnist_sweep.model.saving import load_model

    model = build_model({"hidden_layers": 1, "units": 16, "augment_elastic": 20.0})
    model.save(tmp_path / "m.keras")
    layer = next(layer for layer in load_model(tmp_path / "m.keras").layers if isinstance(layer, RandomAffine))
    assert (layer.elastic, layer.shift) == (20.0, 0.0)


def _slanted_bar(shear: float, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A 28 x 28 vertical bar (rows 6..21) slanted by ``shear`` columns per row, moved by ``offset``."""
    image = np.zeros((28, 28), dtype="float32")
    for row in range(6, 22):
        col = int(round(13.5 + shear * (row - 13.5)))
        image[row + offset[0], col - 1 + offset[1]: col + 1 + offset[1]] = 1.0
    return image.reshape(1, -1)


def _skew(flat: np.ndarray) -> np.ndarray:
    images = flat.reshape(-1, 28, 28)
    rows, cols = np.indices((28, 28))
    total = images.sum(axis=(1, 2))
    mr = (images * rows).sum(axis=(1, 2)) / total
    mc = (images * cols).sum(axis=(1, 2)) / total
    var = (images * (rows - mr[:, None, None]) ** 2).sum(axis=(1, 2)) / total
    cov = (images * (rows - mr[:, None, None]) * (cols - mc[:, None, None])).sum(axis=(1, 2)) / total
    return cov / var


def test_deskew_straightens_and_centres_each_image_in_training_and_inference() -> None:
    use_backend()
    import keras

    from mnist_sweep.model.layers import Deskew

    x = np.concatenate([_slanted_bar(0.4, (2, -3)), _slanted_bar(-0.3, (-3, 4)), _slanted_bar(0.0)])
    assert np.all(np.abs(_skew(x)[:2]) > 0.25)
    layer = Deskew()
    for training in (False, True):  # not an augmentation: validation, test and predict see it too
        out = keras.ops.convert_to_numpy(layer(x, training=training))
        assert np.all(np.abs(_skew(out)) < 0.03)
        np.testing.assert_allclose(_centre_of_mass(out), 13.5, atol=0.15)
        np.testing.assert_allclose(out.sum(axis=1), x.sum(axis=1), rtol=0.05)  # the ink is kept
    upright = keras.ops.convert_to_numpy(layer(_slanted_bar(0.0)))
    np.testing.assert_allclose(upright, _slanted_bar(0.0), atol=1e-5)  # already straight and centred: unchanged
    blank = np.zeros((2, 784), dtype="float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(blank)), blank)  # no ink: no NaN


def test_the_deskew_axis_puts_the_layer_in_the_saved_model(tmp_path) -> None:
    use_backend()
    from mnist_sweep.model.layers import Deskew
    from mnist_sweep.model.saving import load_model

    assert not any(isinstance(layer, Deskew) for layer in build_model({"hidden_layers": 1, "units": 16}).layers)
    model = build_model({"hidden_layers": 1, "units": 16, "deskew": True, "augment_shift": 2.0})
    assert isinstance(model.layers[0], Deskew)  # before the augmentation: slant removed, then warped
    x = _slanted_bar(0.4, (2, -3))
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[0], Deskew)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert count_params(model) == count_params(build_model({"hidden_layers": 1, "units": 16}))
