"""The convolutional family of the one factory (``architecture: cnn``): its layers, training, saving,
packing, and the search space asking each family's axes only."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from mnist_sweep.model.factory import build_model, count_params
from mnist_sweep.model.packed import PackedTrainer, pack_key
from mnist_sweep.model.saving import load_model
from mnist_sweep.model.training import fit, fresh_keras
from mnist_sweep.sweep.params import suggest_params
from mnist_sweep.sweep.space import SearchSpace

SMALL = {"architecture": "cnn", "conv_blocks": 2, "filters": 8, "kernel_size": 3, "pooling": "max",
         "head_units": 32, "dropout": 0.1, "batch_size": 64, "epochs": 2, "learning_rate": 0.003}


def _kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_a_cnn_has_its_blocks_head_and_the_shared_layers() -> None:
    model = build_model({**SMALL, "batch_norm": True, "deskew": True, "augment_shift": 2.0})
    kinds = _kinds(model)
    assert kinds[:3] == ["Deskew", "RandomAffine", "Reshape"]  # flat images in, as every model takes them
    assert kinds.count("Conv2D") == 4 and kinds.count("Pool2x2") == 2 and kinds.count("BatchNormalization") == 5
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [8, 8, 16, 16]
    assert model.output_shape == (None, 10) and model.name == "cnn"
    strided = build_model({**SMALL, "pooling": "none", "conv_blocks": 1})
    assert "Pool2x2" not in _kinds(strided)
    assert [layer.strides for layer in strided.layers if hasattr(layer, "filters")] == [(1, 1), (2, 2)]
    # 3x3x1x8+8, 3x3x8x8+8, 3x3x8x16+16, 3x3x16x16+16, then (7*7*16)x32+32, 32x10+10
    assert count_params(build_model(SMALL)) == 80 + 584 + 1168 + 2320 + 25120 + 330
    with pytest.raises(ValueError, match="square"):
        build_model(SMALL, input_size=700)


def test_pooling_is_keras_s_own_on_odd_sides_too() -> None:
    import keras

    from mnist_sweep.model.layers import Pool2x2

    x = np.random.default_rng(0).normal(size=(3, 7, 7, 4)).astype("float32")
    np.testing.assert_allclose(Pool2x2("max")(x), keras.layers.MaxPooling2D(2)(x), atol=1e-6)
    np.testing.assert_allclose(Pool2x2("average")(x), keras.layers.AveragePooling2D(2)(x), atol=1e-6)


def test_a_cnn_learns_saves_and_reloads_to_the_same_answers(tiny_dataset, tmp_path) -> None:
    ds = tiny_dataset
    fresh_keras(0)
    model = build_model(SMALL, steps_per_epoch=len(ds.x_train) // 64)
    result = fit(model, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=64, epochs=2)
    assert max(result.history["val_accuracy"]) > 0.75  # 2 epochs on 2,000 images; chance is 0.1
    model.save(tmp_path / "cnn.keras")
    again = load_model(tmp_path / "cnn.keras")
    np.testing.assert_allclose(again.predict(ds.x_val[:50], verbose=0), model.predict(ds.x_val[:50], verbose=0),
                               atol=1e-6)


def test_cnns_of_one_structure_pack_and_other_structures_do_not(tiny_dataset) -> None:
    assert pack_key(SMALL) == pack_key({**SMALL, "learning_rate": 0.01, "dropout": 0.3})
    assert pack_key(SMALL) != pack_key({**SMALL, "filters": 16})
    assert pack_key(SMALL) != pack_key({**SMALL, "architecture": "mlp"})
    ds = tiny_dataset
    models = []
    for seed, rate in enumerate((0.003, 0.001)):
        fresh_keras(seed)
        models.append(build_model({**SMALL, "learning_rate": rate}, steps_per_epoch=len(ds.x_train) // 64))
    trainer = PackedTrainer(models, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=64, epochs=2)
    for _ in range(2):
        metrics = trainer.run_epoch()
    assert all(m is not None and m["val_accuracy"] > 0.6 for m in metrics)


def test_each_family_is_asked_its_own_axes_and_mlps_alone_ask_no_architecture() -> None:
    mixed = SearchSpace.model_validate({"architecture": ["mlp", "cnn"], "units": [32, 64], "filters": [8, 16]})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(12):
        params = suggest_params(study.ask(), mixed)
        seen[params["architecture"]] = params
    assert set(seen) == {"mlp", "cnn"}
    assert "filters" in seen["cnn"] and "units" not in seen["cnn"] and "hidden_layers" not in seen["cnn"]
    assert "units" in seen["mlp"] and "filters" not in seen["mlp"] and "head_units" not in seen["mlp"]
    plain = suggest_params(study.ask(), SearchSpace.model_validate({"units": [32, 64]}))
    assert "architecture" not in plain and "filters" not in plain  # an MLP study's trials as before CNNs


def test_pooled_blocks_stop_where_the_image_would_vanish() -> None:
    from mnist_sweep.model.factory import pooled_blocks_that_fit

    assert [pooled_blocks_that_fit(side) for side in (1, 2, 3, 4, 7, 8, 14, 28)] == [0, 1, 1, 2, 2, 3, 3, 4]
    with pytest.raises(ValueError, match="conv_blocks: 3 blocks of 2 x 2 pooling halve a 4 x 4 image to nothing"):
        build_model({**SMALL, "conv_blocks": 3}, input_size=16)
    assert build_model({**SMALL, "conv_blocks": 3, "pooling": "none"}, input_size=16).output_shape == (None, 10)
