"""Your own data: image folders, pixel CSVs, other sizes and class counts, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_SWEEP
from PIL import Image

import mnist_sweep as ms
from mnist_sweep.cli.main import main
from mnist_sweep.data.dataset import load_arrays, load_dataset
from mnist_sweep.sweep.config import DataConfig

LETTERS = "abcdefghij"  # class folder names for MNIST's digits 0..9


@pytest.fixture(scope="module")
def mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    raw = load_arrays("bundled")
    pick = np.random.default_rng(0).permutation(60000)[:1500]
    return raw.x_train[pick], raw.y_train[pick]


def _folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / LETTERS[label]
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image)
        if i % 50 == 1:  # a few colour images, and a few of another size, dark on light
            picture = picture.convert("RGB")
        if i % 50 == 2:
            picture = Image.fromarray(255 - image).resize((56, 56))
        picture.save(folder / f"{i}.{'jpg' if i % 50 == 3 else 'png'}")
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def test_an_image_folder_gives_named_classes_and_a_carved_test_split(tmp_path: Path, mnist_sample) -> None:
    root = _folder(tmp_path / "letters", *mnist_sample)
    ds = load_dataset(DataConfig(source=str(root), validation_size=200))
    assert ds.class_names == tuple(LETTERS) and ds.side == 28 and ds.x_train.shape[1] == 784
    total = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    assert total == 1500 and len(ds.x_test) == 300  # 20% carved, the rest split into train and validation
    notes = " | ".join(ds.notes)
    assert "skipped 2 file(s)" in notes and "resized 30 of 1500 images to 28 x 28" in notes
    assert "converted 30 colour image(s)" in notes and "inverted 30 dark-on-light" in notes
    assert "carved as the test set" in notes
    again = load_dataset(DataConfig(source=str(root), validation_size=200))
    np.testing.assert_array_equal(again.x_test, ds.x_test)  # the same test images every time
    for part in (ds.y_train, ds.y_val, ds.y_test):  # stratified: every class everywhere
        assert set(np.unique(part)) == set(range(10))


def test_train_and_test_subfolders_and_a_forced_size(tmp_path: Path, mnist_sample) -> None:
    x, y = mnist_sample
    _folder(tmp_path / "d" / "train", x[:1000], y[:1000])
    _folder(tmp_path / "d" / "test", x[1000:1200], y[1000:1200])
    ds = load_dataset(DataConfig(source=str(tmp_path / "d"), validation_size=100, image_size=14))
    assert len(ds.x_test) == 200 and ds.side == 14 and ds.x_train.shape[1] == 196
    assert not any("carved" in note for note in ds.notes)


def test_a_broken_image_is_exit_2_naming_it_and_nothing_is_written(tmp_path: Path, mnist_sample, write_sweep,
                                                                   capsys) -> None:
    root = _folder(tmp_path / "bad", *(a[:200] for a in mnist_sample))
    (root / "c" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    path = write_sweep("bad", data={"source": str(root), "validation_size": 20})
    assert main(["run", str(path), "--storage", f"sqlite:///{tmp_path / 'bad.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png" in err and "Traceback" not in err
    assert not (tmp_path / "bad.db").exists()


def test_a_pixel_csv(tmp_path: Path, mnist_sample) -> None:
    x, y = mnist_sample
    header = "label," + ",".join(f"pixel{k}" for k in range(784))
    rows = [f"{label}," + ",".join(map(str, image.reshape(-1))) for image, label in zip(x[:600], y[:600], strict=True)]
    (tmp_path / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    ds = load_dataset(DataConfig(source=str(tmp_path / "train.csv"), validation_size=100))
    assert ds.class_names == tuple(str(d) for d in range(10)) and len(ds.x_test) == 120
    every = np.concatenate([ds.x_train, ds.x_val, ds.x_test]).sum(axis=1)  # each row once, pixels intact
    np.testing.assert_allclose(np.sort(every), np.sort(x[:600].reshape(600, -1).sum(axis=1) / 255), rtol=1e-5)
    (tmp_path / "bad.csv").write_text("label,p0,p1,p2\n1,0,0,0\n")
    with pytest.raises(ms.InputError, match="bad.csv: 3 pixel columns, want a square count"):
        load_arrays(str(tmp_path / "bad.csv"))
    (tmp_path / "nolabel.csv").write_text("p0,p1,p2,p3\n1,0,0,0\n")
    with pytest.raises(ms.InputError, match="no 'label' column"):
        load_arrays(str(tmp_path / "nolabel.csv"))


def test_five_classes_of_14_by_14_end_to_end(tmp_path: Path, mnist_sample, write_sweep, capsys) -> None:
    x, y = mnist_sample
    small = x.reshape(len(x), 14, 2, 14, 2).mean(axis=(2, 4)).astype(np.uint8)
    five = y < 5
    np.savez(tmp_path / "five.npz", x_train=small[five][:600], y_train=y[five][:600],
             x_test=small[five][600:], y_test=y[five][600:])
    space = {**TINY_SWEEP["space"], "hidden_layers": 1, "units": 64, "epochs": 5, "optimizer": "adam",
             "learning_rate": 0.003, "dropout": 0.0}
    sweep = write_sweep("five", trials=1, space=space, data={"source": str(tmp_path / "five.npz"),
                                                              "validation_size": 100})
    url = f"sqlite:///{tmp_path / 'five.db'}"
    assert main(["run", str(sweep), "--storage", url]) == 0
    assert main(["export", "--storage", url, "-o", str(tmp_path / "best.yaml")]) == 0
    assert main(["train", str(tmp_path / "best.yaml"), "-o", str(tmp_path / "five.keras")]) == 0
    model = ms.load_model(tmp_path / "five.keras")
    assert model.input_shape == (None, 196) and model.output_shape == (None, 5)
    files = []
    for i, image in enumerate(small[five][600:620]):
        Image.fromarray(image).save(tmp_path / f"t{i}.png")
        files.append(str(tmp_path / f"t{i}.png"))
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "five.keras"), *files, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert all(len(r["probabilities"]) == 5 and "digit" not in r for r in results)
    right = sum(r["label"] == str(label) for r, label in zip(results, y[five][600:620], strict=True))
    assert right >= 14  # 5 epochs on 500 images


def test_a_study_does_not_resume_on_other_data(tmp_path: Path, mnist_sample, tiny_dataset) -> None:
    from mnist_sweep.search.loop import run_sweep

    x, y = mnist_sample
    np.savez(tmp_path / "a.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:400], y_test=y[300:400])
    five = y < 5
    np.savez(tmp_path / "b.npz", x_train=x[five][:300], y_train=y[five][:300], x_test=x[five][300:],
             y_test=y[five][300:])
    url = f"sqlite:///{tmp_path / 's.db'}"
    sweep = ms.sweep_from_dict({**TINY_SWEEP, "trials": 1, "data": {"validation_size": 50}})
    run_sweep(sweep, url, dataset=load_dataset(DataConfig(source=str(tmp_path / "a.npz"), validation_size=50)))
    with pytest.raises(ms.InputError, match="made on other data .*classes 0, 1, 2, 3, 4"):
        run_sweep(sweep, url, dataset=load_dataset(DataConfig(source=str(tmp_path / "b.npz"), validation_size=50)))


def test_cnns_on_small_images_train_or_are_refused_naming_conv_blocks(tmp_path: Path, mnist_sample, write_sweep,
                                                                         capsys) -> None:
    x, y = mnist_sample
    tiny = x.reshape(len(x), 7, 4, 7, 4).mean(axis=(2, 4)).astype(np.uint8)  # 7 x 7: two poolings leave 1 x 1
    np.savez(tmp_path / "tiny.npz", x_train=tiny[:500], y_train=y[:500], x_test=tiny[500:600], y_test=y[500:600])
    data = {"source": str(tmp_path / "tiny.npz"), "validation_size": 100}
    mlp_free = {k: v for k, v in TINY_SWEEP["space"].items() if k not in ("hidden_layers", "units")}
    cnn = {**mlp_free, "architecture": "cnn", "filters": 4, "head_units": 16, "epochs": 1}
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    too_deep = write_sweep("deep", trials=1, space={**cnn, "conv_blocks": {"low": 2, "high": 3}}, data=data)
    assert main(["run", str(too_deep), "--storage", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: sweep deep: space.conv_blocks: up to 3 blocks of 2 x 2 pooling halve these 7 x 7 images "
                   "to nothing; at most 2 (or pooling: none)"]
    assert not (tmp_path / "tiny.db").exists()  # refused before anything was written
    strided = write_sweep("strided", trials=1, space={**cnn, "conv_blocks": 3, "pooling": "none"}, data=data)
    fits = write_sweep("fits", trials=1, space={**cnn, "conv_blocks": 2}, data=data)
    assert main(["run", str(strided), "--storage", url]) == 0
    assert main(["run", str(fits), "--storage", url]) == 0
