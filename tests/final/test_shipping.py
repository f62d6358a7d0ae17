"""What ships beside a final model: MODEL_CARD.md always, model.onnx with --onnx, checked against Keras."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import optuna
import pytest

from mnist_sweep.cli.main import main
from mnist_sweep.final.shipping import model_card


def test_final_writes_a_card_naming_its_members_and_an_onnx_model_that_answers_as_keras(write_sweep,
                                                                                      sqlite_url, tmp_path) -> None:
    space = {"architecture": ["mlp", "cnn"], "hidden_layers": 1, "units": 32, "filters": 4, "conv_blocks": 1,
             "head_units": 16, "epochs": 1, "dropout": 0.0, "deskew": True}
    path = write_sweep(trials=4, space=space, keep={"models": 3})
    assert main(["run", str(path), "--storage", sqlite_url]) == 0
    out = tmp_path / "final"
    assert main(["final", "--study", "tiny", "--storage", sqlite_url, "-o", str(out), "-k", "3", "--onnx"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    card = (out / "MODEL_CARD.md").read_text()
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    for trial in metrics["members"]:
        assert f"| {trial} |" in card and f"architecture={study.trials[trial].params['architecture']}" in card
    assert metrics["provenance"]["data"]["sha256"] in card and "keras" in card
    assert metrics["onnx_agreement"] == 1.0  # every test image answered as Keras answers it
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (5, 10)
    assert main(["final", "--study", "tiny", "--storage", sqlite_url, "-o", str(out)]) == 0
    assert not (out / "model.onnx").exists()  # no older run's ONNX file beside a new model


def test_a_retrained_model_s_card_gives_its_config_and_seed() -> None:
    card = model_card({"test_accuracy": 0.9812, "test_loss": 0.07, "seed": 3, "params": {"units": 128},
                       "n_params": 101770, "backend": "jax", "provenance": {"versions": {"keras": "3.15.1"},
                                                                            "data": {"source": "bundled"}}})
    assert "seed 3" in card and "units=128" in card and "0.9812" in card and "keras 3.15.1" in card


def test_onnx_without_its_packages_is_one_line(monkeypatch, tmp_path) -> None:
    import builtins

    from mnist_sweep.errors import InputError
    from mnist_sweep.final.shipping import export_onnx

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(
        name=name)) if name == "jax2onnx" else real(name, *a, **k))
    with pytest.raises(InputError, match=r"pip install 'mnist-sweep\[onnx\]'"):
        export_onnx(None, tmp_path, np.zeros((1, 784), np.float32))
