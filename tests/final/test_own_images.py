"""Your own frame-filling images end to end: a sweep on an image folder, ``final``, then ``predict`` on
the test files agrees with ``final``'s test accuracy (one preprocessing, recorded with the model);
and ``final`` and ``train`` refuse the folder once it changed (data identified by content)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import SHAPES, TINY_SWEEP, write_shapes
from PIL import Image

from mnist_sweep.cli.main import main


@pytest.fixture(scope="module")
def shapes_study(tmp_path_factory) -> dict[str, Path | str]:
    """A 2-trial sweep on 16 x 16 frame-filling shapes (100 training, 25 test images per class), run
    through the CLI (as a user would: provenance and data identity recorded), and its export."""
    root = tmp_path_factory.mktemp("own")
    folder = write_shapes(root / "shapes", side=16, train=100, test=25)
    sweep = {**TINY_SWEEP, "name": "shapes", "trials": 2, "data": {"source": str(folder), "validation_size": 40},
             "keep": {"models": 2},
             "space": {"hidden_layers": 1, "units": 64, "dropout": 0.0, "optimizer": "adam", "batch_size": 32,
                       "epochs": 6, "learning_rate": {"low": 2e-3, "high": 5e-3, "log": True}}}
    (root / "s.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    url = f"sqlite:///{root / 's.db'}"
    assert main(["run", str(root / "s.yaml"), "--storage", url]) == 0
    assert main(["export", "--study", "shapes", "--storage", url, "-o", str(root / "best.yaml")]) == 0
    return {"root": root, "folder": folder, "url": url, "sweep": root / "s.yaml", "best": root / "best.yaml"}


def test_predict_on_the_test_files_agrees_with_final(shapes_study, capsys) -> None:
    from mnist_sweep.model.saving import load_model, preprocessing

    out = shapes_study["root"] / "final"
    assert main(["final", "--study", "shapes", "--storage", shapes_study["url"], "-o", str(out)]) == 0
    final_accuracy = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert preprocessing(load_model(out / "model.keras")) == "resize"  # one member or an average: recorded
    files = sorted(str(p) for p in (shapes_study["folder"] / "test").glob("*/*.png"))
    capsys.readouterr()
    assert main(["predict", str(out / "model.keras"), *files, "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    right = sum(p["label"] == Path(p["file"]).parent.name for p in predictions)
    assert len(predictions) == 4 * 25 and final_accuracy > 0.7  # learnt something: the check below means it
    assert abs(right / len(predictions) - final_accuracy) <= 0.03  # MNIST's normalisation here: about 0.5


def test_final_and_train_refuse_a_changed_folder_writing_nothing(shapes_study, capsys) -> None:
    extra = shapes_study["folder"] / "train" / "topbar" / "extra.png"
    Image.new("L", (16, 16), 255).save(extra)
    try:
        capsys.readouterr()
        out = shapes_study["root"] / "final2"
        assert main(["final", "--study", "shapes", "--storage", shapes_study["url"], "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "data changed since study 'shapes' was made: train images 360 -> 361, class 'topbar' 90 -> 91" in err
        assert not out.exists()
        model = shapes_study["root"] / "trained" / "model.keras"
        assert main(["train", str(shapes_study["best"]), "-o", str(model)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "data changed since study 'shapes' was made: train images 360 -> 361" in err
        assert not model.parent.exists()
    finally:
        extra.unlink()
    assert main(["final", "--study", "shapes", "--storage", shapes_study["url"], "-o", str(out)]) == 0  # restored
    assert set(json.loads((out / "metrics.json").read_text())["provenance"]["data"]["splits"]["test"]["classes"]) \
        == set(SHAPES)
