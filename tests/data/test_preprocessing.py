"""One image preprocessing, two styles (``mnist``, ``resize``; mnist_sweep/data/images.py), the same
for training and serving, and recorded in the saved model."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import write_shapes
from PIL import Image

from mnist_sweep.data.dataset import load_arrays, load_dataset
from mnist_sweep.data.images import PREPROCESSING, open_image, preprocess
from mnist_sweep.errors import InputError
from mnist_sweep.sweep.config import DataConfig

# the tiny models here are saved untrained: Keras says their optimizer has no variables to load
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


def _bar(side: int = 28) -> np.ndarray:
    """A frame-filling bar near the top: white on black, uint8."""
    image = np.zeros((side, side), np.uint8)
    image[2:7, 1:-1] = 230
    return image


def test_resize_gives_an_image_file_exactly_the_pixels_its_folder_trains_on(tmp_path: Path) -> None:
    root = tmp_path / "kinds"
    bar = _bar(24)
    pictures = {
        "a": [Image.fromarray(bar), Image.fromarray(bar).convert("RGB"),  # grayscale, colour
              Image.fromarray(255 - bar)],  # dark on light: inverted
        "b": [Image.fromarray(np.flipud(bar)).resize((40, 40)),  # another size: resized
              Image.fromarray(np.stack([np.flipud(bar)] * 3 + [np.flipud(bar)], axis=-1), "RGBA")],  # transparent
    }
    for name, images in pictures.items():
        (root / name).mkdir(parents=True)
        for i, picture in enumerate(images):
            picture.save(root / name / f"{i}.png")
    raw = load_arrays(str(root))
    assert raw.preprocessing == "resize"
    files = sorted((root / "a").iterdir()) + sorted((root / "b").iterdir())  # the reader's order
    assert len(files) == len(raw.x_train) == 5
    for path, trained in zip(files, raw.x_train, strict=True):
        served = preprocess(open_image(path), 24, "resize")
        assert served.dtype == np.float32 and served.shape == (24 * 24,)
        np.testing.assert_array_equal(served, trained.reshape(-1).astype(np.float32) / 255.0)  # bit for bit


def test_mnist_centres_the_ink_and_resize_keeps_the_frame() -> None:
    bar = _bar()
    whole = preprocess(Image.fromarray(bar), 28, "resize")
    np.testing.assert_array_equal(whole, bar.reshape(-1) / np.float32(255))  # same size, light on dark: unchanged
    centred = preprocess(Image.fromarray(bar), 28, "mnist").reshape(28, 28)
    rows = np.arange(28)[:, None]
    assert abs((rows * centred).sum() / centred.sum() - 14) < 1  # the ink moved to the centre
    assert np.flatnonzero(centred.sum(axis=1))[0] > 5 and np.flatnonzero(centred.sum(axis=0))[0] >= 3  # 20/28 box
    for style in PREPROCESSING:  # dark on light is inverted in both styles
        np.testing.assert_allclose(preprocess(Image.fromarray(255 - bar), 28, style),
                                   preprocess(Image.fromarray(bar), 28, style), atol=1e-6)
    assert preprocess(Image.fromarray(bar), 28).tolist() == centred.reshape(-1).tolist()  # mnist is the default


def test_an_unknown_style_and_a_blank_digit_are_refused() -> None:
    with pytest.raises(InputError, match="unknown preprocessing 'fancy'.*mnist, resize"):
        preprocess(Image.fromarray(_bar()), 28, "fancy")
    with pytest.raises(InputError, match="blank"):
        preprocess(Image.new("L", (28, 28), 0), 28, "mnist")
    assert preprocess(Image.new("L", (28, 28), 0), 28, "resize").max() == 0  # a black frame is an image


def test_the_dataset_carries_its_style(tmp_path: Path) -> None:
    folder = write_shapes(tmp_path / "shapes", side=8, train=10, test=2)
    ds = load_dataset(DataConfig(source=str(folder), validation_size=10))
    assert ds.preprocessing == "resize" and ds.merge_validation().preprocessing == "resize"
    x = np.zeros((40, 8, 8), np.uint8)
    y = np.arange(40) % 3
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    assert load_dataset(DataConfig(source=str(tmp_path / "a.npz"), validation_size=10)).preprocessing == "mnist"


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny saved models of 16 x 16 inputs and three classes: one recording ``resize``, one built
    without a style (``mnist``), and a copy of the latter as a model saved before styles were recorded."""
    from mnist_sweep.model.factory import build_model
    from mnist_sweep.model.training import fresh_keras

    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for style in ("resize", None):
        fresh_keras(0)
        extra = {"preprocessing": style} if style else {}
        model = build_model({"hidden_layers": 1, "units": 8}, input_size=256, class_names=("x", "y", "z"), **extra)
        paths[style or "default"] = folder / f"{style or 'default'}.keras"
        model.save(paths[style or "default"])
    paths["old"] = folder / "old.keras"
    with zipfile.ZipFile(paths["default"]) as source, zipfile.ZipFile(paths["old"], "w") as old:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = next(x for x in config["config"]["layers"] if x["class_name"] == "ClassNames")
                del layer["config"]["preprocessing"]  # what a model saved before this change holds
                data = json.dumps(config).encode()
            old.writestr(item, data)
    return paths


def test_the_style_is_saved_in_the_model_file_and_read_back(saved_models) -> None:
    from mnist_sweep.model.saving import class_names, load_model, preprocessing

    assert preprocessing(load_model(saved_models["resize"])) == "resize"
    assert preprocessing(load_model(saved_models["default"])) == "mnist"
    old = load_model(saved_models["old"])  # safe mode, no "preprocessing" in its ClassNames config
    assert preprocessing(old) == "mnist" and class_names(old) == ("x", "y", "z")


def test_predict_predict_files_and_serve_apply_the_recorded_style(saved_models, tmp_path: Path) -> None:
    from mnist_sweep.final.predict import predict, predict_files
    from mnist_sweep.final.serve import ModelApp
    from mnist_sweep.model.saving import load_model

    picture = Image.fromarray(_bar(16))
    path = tmp_path / "bar.png"
    picture.save(path)
    inputs = {style: preprocess(picture, 16, style) for style in PREPROCESSING}
    assert np.abs(inputs["mnist"] - inputs["resize"]).max() > 0.5  # the two styles see other pixels
    for name, style in (("resize", "resize"), ("old", "mnist")):
        model = load_model(saved_models[name])
        want = model.predict(inputs[style][None], verbose=0)[0]
        other = model.predict(inputs[next(s for s in PREPROCESSING if s != style)][None], verbose=0)[0]
        assert np.abs(want - other).max() > 1e-4  # the check below can tell the styles apart
        np.testing.assert_allclose(predict(model, picture)[0].probabilities, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(predict_files(saved_models[name], [path])[0]["probabilities"], want,
                                   rtol=1e-5, atol=1e-6)
        app = ModelApp(saved_models[name])
        assert app.info()["preprocessing"] == style
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        np.testing.assert_allclose(app.classify(buffer.getvalue())["probabilities"], want, rtol=1e-5, atol=1e-6)
