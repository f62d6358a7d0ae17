"""The one model factory: the tutorial's four models, every optimizer, the extra axes."""

from __future__ import annotations

import pytest

from mnist_sweep.model.factory import KERAS_DEFAULT_LR, TUTORIAL_MODELS, build_model, count_params, layer_widths


def _dense_units(model) -> list[int]:
    return [layer.units for layer in model.layers if layer.__class__.__name__ == "Dense"]


@pytest.mark.parametrize(
    ("index", "dense", "n_params"),
    [
        (0, [10], 7_850),  # model 1: 784 -> 10 softmax
        (1, [64, 64, 10], 55_050),
        (2, [128, 128, 10], 118_282),
        (3, [512, 512, 10], 669_706),  # model 4: 784-512-512-10
    ],
)
def test_tutorial_models(index: int, dense: list[int], n_params: int) -> None:
    model = build_model(TUTORIAL_MODELS[index])
    assert _dense_units(model) == dense
    assert count_params(model) == n_params
    dropouts = [layer.rate for layer in model.layers if layer.__class__.__name__ == "VariableDropout"]
    assert dropouts == [TUTORIAL_MODELS[index]["dropout"]] * TUTORIAL_MODELS[index]["hidden_layers"]
    assert model.layers[-2].activation.__name__ == "softmax"
    assert model.layers[-1].names == [str(d) for d in range(10)]  # the saved model names its classes


@pytest.mark.parametrize("name", sorted(KERAS_DEFAULT_LR))
def test_every_optimizer_takes_a_learning_rate(name: str) -> None:
    model = build_model({"hidden_layers": 1, "units": 8, "optimizer": name, "learning_rate": 0.0123})
    assert model.optimizer.__class__.__name__.lower() == name
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0123)


def test_missing_learning_rate_is_the_keras_default() -> None:
    assert float(build_model({"optimizer": "sgd"}).optimizer.learning_rate) == pytest.approx(0.01)
    assert float(build_model({"optimizer": "adam"}).optimizer.learning_rate) == pytest.approx(0.001)


def test_extra_axes_change_the_model() -> None:
    model = build_model({"hidden_layers": 2, "units": 32, "batch_norm": True, "input_dropout": 0.2,
                         "activation": "gelu", "weight_decay": 1e-4, "optimizer": "adamw",
                         "lr_schedule": "cosine", "epochs": 3}, steps_per_epoch=10)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds[0] == "VariableDropout" and kinds.count("BatchNormalization") == 2
    assert model.optimizer.weight_decay == pytest.approx(1e-4)
    # cosine decay reaches zero after epochs * steps_per_epoch steps
    schedule = model.optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.001) and float(schedule(30)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_weight_decay_zero_means_no_decay(name: str) -> None:
    # AdamW's own default is 0.004: a trial that says 0 must not decay at it
    optimizer = build_model({"hidden_layers": 1, "units": 8, "optimizer": name, "weight_decay": 0.0}).optimizer
    assert not optimizer.weight_decay  # 0.0 (AdamW) or None (no decay step at all)
    if name == "adamw":
        assert build_model({"hidden_layers": 1, "units": 8, "optimizer": name}).optimizer.weight_decay == 0.0


def test_adamw_with_zero_decay_trains_like_adam() -> None:
    import numpy as np

    from mnist_sweep.model.training import fresh_keras

    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    y = np.arange(64) % 10
    weights = {}
    for name in ("adam", "adamw"):
        fresh_keras(seed=0)
        model = build_model({"hidden_layers": 1, "units": 8, "dropout": 0.0, "optimizer": name,
                             "weight_decay": 0.0, "learning_rate": 0.01})
        model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
        weights[name] = model.get_weights()
    for a, b in zip(weights["adam"], weights["adamw"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_cosine_needs_steps_per_epoch() -> None:
    with pytest.raises(ValueError, match="cosine"):
        build_model({"lr_schedule": "cosine"})


def test_per_layer_units() -> None:
    params = {"hidden_layers": 3, "units": 64, "units_l0": 256, "units_l1": 128}
    assert layer_widths(params) == [256, 128, 64]
    assert _dense_units(build_model(params)) == [256, 128, 64, 10]


def test_option_lists_have_one_source() -> None:
    # the sweep-file validation, the factory's Keras classes and their default learning rates agree
    from mnist_sweep.bench.suite import PARTS
    from mnist_sweep.cli.args import BENCH_PARTS
    from mnist_sweep.model.factory import _OPTIMIZER_CLASSES
    from mnist_sweep.sweep.space import DEFAULT_PARAMS, OPTIMIZERS, SearchSpace

    assert set(_OPTIMIZER_CLASSES) == set(OPTIMIZERS) == set(KERAS_DEFAULT_LR)
    assert BENCH_PARTS == PARTS
    space = SearchSpace()  # an axis left out is fixed at the tutorial's model 4, the factory's defaults
    assert {name: axis.value for name, axis in space.axes().items()} == DEFAULT_PARAMS
    assert {k: DEFAULT_PARAMS[k] for k in TUTORIAL_MODELS[3]} == TUTORIAL_MODELS[3]
