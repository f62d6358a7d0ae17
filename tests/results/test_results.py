"""From a study to a model in use: export the best trial, train it on all training data, predict images."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from helpers import TINY_SWEEP
from PIL import Image

from mnist_sweep._base.files import atomic_path
from mnist_sweep.cli.main import main
from mnist_sweep.errors import InputError
from mnist_sweep.results.export import export_best
from mnist_sweep.search.loop import run_sweep
from mnist_sweep.storage.rdb import redact
from mnist_sweep.sweep.config import SweepConfig, parse_sweep
from mnist_sweep.sweep.loader import load_sweep
from mnist_sweep.sweep.params import fixed_params

# ---------------------------------------------------------------------------------------------
# Fixtures: one real tiny study, one exported config


@pytest.fixture(scope="module")
def study_url(tmp_path_factory, tiny_dataset) -> str:
    """A real study of 2 trials on 2,000 + 1,000 MNIST images (a few seconds)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('study') / 'studies.db'}"
    sweep = parse_sweep({**TINY_SWEEP, "trials": 2}, "tiny.yaml")
    study = run_sweep(sweep, url, dataset=tiny_dataset, heartbeat=False)
    assert study.best_trial.state.name == "COMPLETE"
    return url


@pytest.fixture(scope="module")
def exported(study_url: str, tmp_path_factory) -> Path:
    study = optuna.load_study(study_name="tiny", storage=study_url)
    return export_best(study, tmp_path_factory.mktemp("export") / "best.yaml", storage=study_url)


def _typed(params: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    """Params with their types: 128 and 128.0 must not pass for each other."""
    return {k: (type(v), v) for k, v in params.items()}


# ---------------------------------------------------------------------------------------------
# export


def test_export_yaml_gives_the_best_trial_back_exactly(study_url: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "best.yaml"
    assert main(["export", "--storage", study_url, "-o", str(out)]) == 0
    assert f"wrote {out}: trial" in capsys.readouterr().out
    best = optuna.load_study(study_name="tiny", storage=study_url).best_trial
    sweep = load_sweep(out)
    assert _typed(fixed_params(sweep.space, str(out))) == _typed(best.params)
    assert isinstance(best.params["learning_rate"], float)  # a float that must survive YAML bit for bit
    assert sweep.trials == 1 and sweep.enqueue == [] and sweep.pruner.name == "none"
    assert sweep.data.model_dump() == TINY_SWEEP["data"] | {"source": "bundled", "seed": 0, "image_size": None,
                                                             "test_source": None, "test_fraction": 0.2}
    assert sweep.seed == TINY_SWEEP["seed"] + best.number  # the trial's own weight seed
    assert sweep.source.study == "tiny" and sweep.source.trial == best.number
    assert sweep.source.val_accuracy == best.value and sweep.source.storage == redact(study_url)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", sweep.source.date)
    assert [p.name for p in tmp_path.iterdir()] == ["best.yaml"]  # no temporary file left


def test_export_json(study_url: str, tmp_path: Path) -> None:
    out = tmp_path / "best.json"
    assert main(["export", "--storage", study_url, "-o", str(out)]) == 0  # the suffix picks JSON
    best = optuna.load_study(study_name="tiny", storage=study_url).best_trial
    assert json.loads(out.read_text())["source"]["trial"] == best.number
    assert _typed(fixed_params(load_sweep(out).space)) == _typed(best.params)
    other = tmp_path / "best.cfg"
    assert main(["export", "--storage", study_url, "-o", str(other), "--format", "json"]) == 0
    assert json.loads(other.read_text()) | {"source": None} == json.loads(out.read_text()) | {"source": None}


def test_export_default_path(study_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--storage", study_url, "--study", "tiny"]) == 0
    assert [p.name for p in (tmp_path / "studies" / "tiny").iterdir()] == ["best.yaml"]


def test_export_needs_a_study_name_when_there_are_several(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=url)
    assert main(["export", "--storage", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a, b" in err[0] and "--study" in err[0]
    assert main(["export", "--storage", url, "--study", "c"]) == 2
    assert "'c'" in capsys.readouterr().err


def test_export_of_a_missing_storage_creates_nothing(tmp_path: Path, capsys) -> None:
    assert main(["export", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no such storage file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_without_a_completed_trial(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="empty", storage=url, direction="maximize")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    assert main(["export", "--storage", url, "-o", str(tmp_path / "best.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: study 'empty': no completed trial to export (1 trials in all)"]
    assert not (tmp_path / "best.yaml").exists()


def test_per_layer_trial_exports_its_widths_and_run_reproduces_its_params(tmp_path: Path, tiny_dataset) -> None:
    space = {**TINY_SWEEP["space"], "hidden_layers": {"low": 1, "high": 2}, "per_layer_units": True}
    sweep = parse_sweep({**TINY_SWEEP, "space": space}, "layers.yaml")
    url = f"sqlite:///{tmp_path / 'layers.db'}"
    study = optuna.create_study(study_name="layers", storage=url, direction="maximize")
    study.set_user_attr("sweep", sweep.model_dump(mode="json"))
    params = {"hidden_layers": 2, "dropout": 0.1, "optimizer": "adam", "batch_size": 128, "epochs": 1,
              "learning_rate": 0.0031622776601683794, "units_l0": 32, "units_l1": 16}
    dists = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=0.9))
    path = export_best(study, tmp_path / "best.yaml")
    exported = load_sweep(path)
    assert exported.space.layer_units == [32, 16]
    assert {k: v for k, v in fixed_params(exported.space).items() if k in params} == params
    rerun = run_sweep(exported, f"sqlite:///{tmp_path / 'rerun.db'}", dataset=tiny_dataset, heartbeat=False)
    assert rerun.trials[0].params == fixed_params(exported.space)  # `run` accepts the export as is


def test_an_interrupted_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "best.yaml"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["best.yaml"]


# ---------------------------------------------------------------------------------------------
# train


def test_train_writes_model_metrics_and_curves(exported: Path, tmp_path: Path, capsys) -> None:
    model_path = tmp_path / "final" / "model.keras"
    assert main(["train", str(exported), "-o", str(model_path), "--epochs", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"^test accuracy: (0\.\d{4}) \((\d+\.\d\d)%\)", out, re.MULTILINE)
    assert match and float(match[2]) == pytest.approx(100 * float(match[1]), abs=0.01)
    metrics = json.loads((tmp_path / "final" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert f"{metrics['test_accuracy']:.4f}" == match[1]
    assert metrics["epochs"] == 1 and metrics["seed"] == 3
    assert len(metrics["history"]["loss"]) == len(metrics["history"]["accuracy"]) == 1
    assert metrics["data"]["train_images"] == 3000  # train_size 2000 + the 1000 validation images
    assert metrics["data"]["test_images"] == 10000
    provenance = metrics["provenance"]
    assert {"python", "keras", "optuna", "numpy"} <= set(provenance["versions"])
    assert metrics["backend"] == provenance["backend"] and metrics["backend"] in provenance["versions"]
    assert len(provenance["data"]["sha256"]) == 64 and provenance["data"]["train_images"] == 3000
    assert provenance["machine"]["cores"] >= 1 and provenance["code"]["version"]
    assert metrics["params"] == {**fixed_params(load_sweep(exported).space), "epochs": 1}
    assert (tmp_path / "final" / "curves.html").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == ["MODEL_CARD.md", "curves.html", "metrics.json",
                                                                      "model.keras"]


def test_train_refuses_a_search_space(write_sweep, tmp_path: Path, capsys) -> None:
    path = write_sweep()
    assert main(["train", str(path), "-o", str(tmp_path / "m.keras")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"error: {path}: space.hidden_layers: not fixed (0..1);" in err[0]
    assert any(line.startswith(f"error: {path}: space.learning_rate: not fixed") for line in err)
    assert not (tmp_path / "m.keras").exists()


def test_train_model_file_must_be_keras(exported: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(exported), "-o", str(tmp_path / "model.h5")]) == 2
    assert "must end in .keras" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# predict

DIGITS = range(10)  # the first ten test images: 7 2 1 0 4 1 4 9 5 9


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """The tutorial's model 2-like MLP (2 x 128) trained for 3 epochs on 16,000 images (about 97%)."""
    from mnist_sweep.final.retrain import train_final

    sweep = SweepConfig.model_validate({
        "name": "predict", "trials": 1,
        "data": {"validation_size": 1000, "train_size": 15000},
        "space": {"hidden_layers": 2, "units": 128, "dropout": 0.2, "optimizer": "adam", "batch_size": 128,
                  "epochs": 3},
    })
    result = train_final(sweep, output_dir=tmp_path_factory.mktemp("model"))
    assert result.test_accuracy > 0.9
    return result.model_path


@pytest.fixture(scope="module")
def test_digits() -> tuple[np.ndarray, np.ndarray]:
    from mnist_sweep.data.dataset import load_arrays

    arrays = load_arrays()
    return arrays["x_test"][list(DIGITS)], arrays["y_test"][list(DIGITS)]


def _write_variants(images: np.ndarray, folder: Path) -> dict[str, list[Path]]:
    """Each digit as a user would have it: dark on light and 3x larger; light on dark, off-centre on a wide page."""
    variants: dict[str, list[Path]] = {"dark_on_light_3x": [], "off_centre_wide": []}
    for i, x in enumerate(images):
        big = Image.fromarray(255 - x).resize((84, 84), Image.Resampling.BILINEAR)
        variants["dark_on_light_3x"].append(folder / f"{i}_inverted.png")
        big.save(variants["dark_on_light_3x"][-1])
        page = Image.new("L", (120, 70), 0)
        page.paste(Image.fromarray(x).resize((56, 56), Image.Resampling.BICUBIC), (50, 10))
        variants["off_centre_wide"].append(folder / f"{i}_wide.jpg")
        page.save(variants["off_centre_wide"][-1], quality=90)
    return variants


def test_predict_reads_digits_in_any_polarity_and_size(model_path: Path, test_digits, tmp_path: Path,
                                                       capsys) -> None:
    images, labels = test_digits
    for name, paths in _write_variants(images, tmp_path).items():
        assert main(["predict", str(model_path), *map(str, paths), "--json"]) == 0
        results = json.loads(capsys.readouterr().out)
        assert [r["file"] for r in results] == [str(p) for p in paths]
        predicted = [r["digit"] for r in results]
        assert sum(p == y for p, y in zip(predicted, labels, strict=True)) >= 9, (name, predicted, list(labels))
        for r in results:
            assert len(r["probabilities"]) == 10 and sum(r["probabilities"]) == pytest.approx(1, abs=1e-4)
            assert r["probability"] == max(r["probabilities"])


def test_predict_reports_bad_files_and_classifies_the_rest(model_path: Path, test_digits, tmp_path: Path,
                                                          capsys) -> None:
    good = tmp_path / "seven.png"
    Image.fromarray(test_digits[0][0]).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    assert main(["predict", str(model_path), str(text), str(good), str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines() == [f"{good}: 7 (p={_probability(captured.out)})"]
    assert captured.err.strip().splitlines() == [
        f"error: {text}: not an image (or a format Pillow cannot read)",
        f"error: {missing}: no such file",
    ]


def _probability(out: str) -> str:
    return re.search(r"p=(\d\.\d{3})", out)[1]


@pytest.mark.parametrize(("name", "message"), [("model.h5", "not a .keras model file"),
                                               ("nope.keras", "no such model file")])
def test_predict_needs_a_keras_model(name: str, message: str, tmp_path: Path, capsys) -> None:
    model = tmp_path / name
    if model.suffix == ".h5":
        model.write_bytes(b"\x89HDF\r\n")
    image = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(image)
    assert main(["predict", str(model), str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {model}: {message}")


def test_preprocess_makes_an_mnist_digit(test_digits) -> None:
    from mnist_sweep.data.images import preprocess

    x = test_digits[0][3]
    direct = preprocess(Image.fromarray(x))
    inverted = preprocess(Image.fromarray(255 - x))
    assert direct.shape == (784,) and direct.dtype == np.float32
    assert 0.0 <= direct.min() and direct.max() <= 1.0
    assert np.abs(direct - inverted).max() < 0.05  # polarity does not matter
    transparent = np.zeros((28, 28, 4), dtype=np.uint8)
    transparent[..., 3] = x  # black ink drawn on a transparent canvas
    assert np.abs(direct - preprocess(Image.fromarray(transparent, "RGBA"))).max() < 0.05
    rows, cols = np.indices((28, 28))
    image = direct.reshape(28, 28)
    assert (rows * image).sum() / image.sum() == pytest.approx(14, abs=0.5)
    assert (cols * image).sum() / image.sum() == pytest.approx(14, abs=0.5)
    assert np.corrcoef(direct, x.reshape(-1))[0, 1] > 0.9  # an MNIST digit stays itself
    with pytest.raises(InputError, match="blank"):
        preprocess(Image.new("L", (40, 40), 255))
