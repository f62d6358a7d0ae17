"""Data identified by content: a study records each split's sha256, image count and class counts, and
resuming it on changed data is refused in one line naming what changed, before anything is written."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import mnist_sweep as ms
from mnist_sweep._base.provenance import check_same_data, data_changes, split_identity
from mnist_sweep.cli.main import main

SPACE = {"hidden_layers": 0, "optimizer": "adam", "batch_size": 32, "epochs": 1, "learning_rate": 0.01}


def _write_npz(path: Path, n_train: int = 120) -> Path:
    """Random 8 x 8 images of three classes (label = index % 3): the first ``n_train`` of one draw, and
    the same 30 test images whatever ``n_train``."""
    x = np.random.default_rng(0).integers(0, 256, (n_train, 8, 8), dtype=np.uint8)
    x_test = np.random.default_rng(1).integers(0, 256, (30, 8, 8), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(n_train) % 3, x_test=x_test, y_test=np.arange(30) % 3)
    return path


@pytest.fixture
def study_on_npz(tmp_path: Path, write_sweep) -> tuple[Path, Path, str]:
    data = _write_npz(tmp_path / "a.npz")
    sweep = write_sweep("ident", trials=1, space=SPACE, data={"source": str(data), "validation_size": 30})
    url = f"sqlite:///{tmp_path / 'ident.db'}"
    assert main(["run", str(sweep), "--storage", url]) == 0
    return data, sweep, url


def test_resume_refuses_changed_data_in_one_line_and_adds_no_trial(study_on_npz, capsys) -> None:
    data, sweep, url = study_on_npz
    _write_npz(data, n_train=121)  # one more training image, of class '0' (120 % 3)
    capsys.readouterr()
    assert main(["run", str(sweep), "--storage", url, "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: data changed since study 'ident' was made: train images 90 -> 91, ")
    assert "class '0' 30 -> 31" in err and "test" not in err and "use --study NEW or --new-study" in err
    with pytest.raises(ms.InputError, match="data changed since study 'ident'"):
        ms.run(sweep, storage=url, jobs=2)  # the parallel path checks before it starts any worker
    assert len(ms.load_study(url, "ident").get_trials(deepcopy=False)) == 1
    _write_npz(data)  # the data as they were: resumes
    assert main(["run", str(sweep), "--storage", url, "--trials", "2"]) == 0
    assert len(ms.load_study(url, "ident").get_trials(deepcopy=False)) == 2


def test_the_study_records_each_split_by_content(study_on_npz) -> None:
    _, _, url = study_on_npz
    splits = ms.load_study(url, "ident").user_attrs["provenance"]["data"]["splits"]
    assert {name: s["images"] for name, s in splits.items()} == {"train": 90, "validation": 30, "test": 30}
    assert splits["test"]["classes"] == {"0": 10, "1": 10, "2": 10}
    assert all(len(s["sha256"]) == 64 for s in splits.values())


def test_a_study_recorded_before_the_splits_still_resumes(study_on_npz) -> None:
    data, sweep, url = study_on_npz
    study = ms.load_study(url, "ident")
    provenance = study.user_attrs["provenance"]
    del provenance["data"]["splits"]  # what a study made before this change holds
    study.set_user_attr("provenance", provenance)
    _write_npz(data, n_train=121)
    assert main(["run", str(sweep), "--storage", url, "--trials", "2"]) == 0


def _dataset(labels: dict[str, list[int]], seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, suffix in (("train", "train"), ("validation", "val"), ("test", "test")):
        y = np.array(labels.get(split, [0, 1]), dtype=np.int32)
        arrays[f"x_{suffix}"], arrays[f"y_{suffix}"] = rng.random((len(y), 16), dtype=np.float32), y
    return SimpleNamespace(class_names=("cat", "dog"), **arrays)


def test_what_changed_is_named_per_split() -> None:
    before = split_identity(_dataset({"train": [0, 0, 1, 1]}))
    assert data_changes(before, split_identity(_dataset({"train": [0, 0, 1, 1]}))) == []
    assert data_changes(before, split_identity(_dataset({"train": [0, 0, 1, 1, 1]}))) == [
        "train images 4 -> 5, class 'dog' 2 -> 3", "other validation images (the same counts)",
        "other test images (the same counts)"]  # the seeded draws shift after the extra image
    assert data_changes(before, split_identity(_dataset({"train": [0, 0, 0, 1]})))[0] == \
        "train class 'cat' 2 -> 3, class 'dog' 2 -> 1"
    with pytest.raises(ms.InputError, match=r"^data changed since study 's' was made: train images 4 -> 5, .*; redo$"):
        check_same_data({"data": {"splits": before}}, _dataset({"train": [0, 0, 1, 1, 1]}), "s", "redo")
    check_same_data({"data": {"sha256": "recorded before the splits were"}}, _dataset({}), "s", "redo")
    check_same_data(None, _dataset({}), "s", "redo")
