"""Classify digits with a trained model: image files, PIL images or MNIST-style arrays.

An MLP trained on MNIST only knows MNIST's conventions, so an image file or PIL image is first
made to look like an MNIST digit (:func:`preprocess`, the steps of MNIST's own normalisation):
grayscale, white ink on black (inverted when the border is light), cropped to the digit, scaled
to fit 20 x 20 keeping its aspect ratio, placed on 28 x 28 with its centre of mass at the
centre, in [0, 1]. Arrays are taken as MNIST images already (28 x 28, white on black: uint8
0..255 or floats in [0, 1]) and only scaled.

Example:
    >>> predictions = predict("studies/quick/model.keras", x_test[:3])
    >>> [(p.digit, round(p.probability, 3)) for p in predictions]
    [(7, 0.998), (2, 0.991), (1, 0.999)]
    >>> predict_files(load_model("studies/quick/model.keras"), ["seven.png"])
    [{'file': 'seven.png', 'digit': 7, 'probability': 0.998, 'probabilities': [...]}]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_sweep.errors import InputError

_BOX, _CANVAS = 20, 28
_INK_THRESHOLD = 0.25  # of the darkest-to-lightest range: what counts as the digit for cropping


def preprocess(image: Image.Image) -> np.ndarray:
    """An image of one digit as MNIST's model input: 784 float32 values in [0, 1], white on black.

    Raises:
        InputError: the image is blank (no ink to find).
    """
    gray = _grayscale(image)
    if _border(gray).mean() > 127.5:
        gray = 255.0 - gray  # dark ink on light paper -> MNIST's light ink on black
    ink = np.clip(gray - np.median(_border(gray)), 0.0, None)
    if ink.max() <= 0:
        raise InputError("no digit found (blank image)")
    ink /= ink.max()
    rows, cols = np.nonzero(ink > _INK_THRESHOLD)
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    height, width = ink.shape
    scale = _BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    patch = Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(patch, dtype=np.float32) / 255.0
    canvas = np.zeros((_CANVAS, _CANVAS), dtype=np.float32)
    top, left = _centre_of_mass_offset(digit)
    canvas[top: top + digit.shape[0], left: left + digit.shape[1]] = digit
    return canvas.reshape(-1)


def load_model(path: str | Path) -> Any:
    """Load a ``.keras`` model saved by ``train`` (safe mode: no arbitrary code from the file).

    Raises:
        InputError: not a ``.keras`` file, missing, unreadable, or not a 784-input model.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"{path}: not a .keras model file (want the model.keras that 'train' saves)")
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    from mnist_sweep.settings import use_backend

    use_backend("auto")  # a fresh process (a notebook that only predicts) gets the fast backend too
    import keras

    import mnist_sweep.layers  # noqa: F401 - registers the custom layers the saved model names

    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - zip, h5py and deserialisation errors all mean "cannot load"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: cannot load model ({first[:200]})") from None
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if shape[-1:] != (784,):
        raise InputError(f"{path}: not an MNIST model (input shape {shape}, want (None, 784))")
    return model


@dataclass(frozen=True)
class Prediction:
    """One image's class: ``digit``, its ``probability`` and all ten ``probabilities``."""

    digit: int
    probability: float
    probabilities: tuple[float, ...]

    def __getitem__(self, key: str) -> Any:
        """``p["digit"]`` as well as ``p.digit``, like the dicts ``predict --json`` prints."""
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict(model: Any, images: Any) -> list[Prediction]:
    """Classify ``images`` with ``model`` (a Keras model, or the path of a ``.keras`` file).

    Args:
        images: one image or a sequence of them: file paths, PIL images, or arrays in MNIST's
            layout (28 x 28, or 784 values; uint8 0..255 or floats in [0, 1]; white on black).
            A batch array (n x 28 x 28 or n x 784) is n images.

    Returns:
        One :class:`Prediction` per image, in order.

    Raises:
        InputError: an image that cannot be read or has the wrong shape, naming it.
    """
    if isinstance(model, (str, Path)):
        model = load_model(model)
    x = np.stack([_as_input(item, i) for i, item in enumerate(_items(images))])
    probabilities = np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float64)
    return [Prediction(int(np.argmax(row)), float(row.max()), tuple(float(p) for p in row)) for row in probabilities]


def _items(images: Any) -> list[Any]:
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3 or (images.ndim == 2 and images.shape[1] == _CANVAS * _CANVAS):
            return list(images)
        return [images]
    return list(images)


def _as_input(item: Any, index: int) -> np.ndarray:
    if isinstance(item, (str, Path)):
        try:
            return preprocess(_open(Path(item)))
        except InputError as err:
            raise InputError(f"{item}: {err}") from None
    if isinstance(item, Image.Image):
        return preprocess(item)
    array = np.asarray(item)
    if array.size != _CANVAS * _CANVAS or array.ndim not in (1, 2):
        raise InputError(f"image {index}: an array of shape {array.shape}, want 28 x 28 or 784 values")
    scaled = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    if scaled.size and (scaled.min() < 0.0 or scaled.max() > 1.0):
        raise InputError(f"image {index}: float values outside [0, 1] (uint8 arrays are scaled by 1/255)")
    return scaled.reshape(-1)


def predict_files(model: Any, paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Classify each image file; a file that cannot be read gets an ``error`` entry instead
    (what ``predict FILE...`` prints). ``model`` is a Keras model or a ``.keras`` path.

    Returns:
        One dict per path, in order: ``file``, then ``digit``, ``probability`` and
        ``probabilities`` (10 floats), or ``error`` (one line).
    """
    if isinstance(model, (str, Path)):
        model = load_model(model)
    results: list[dict[str, Any]] = []
    inputs: list[np.ndarray] = []
    for path in paths:
        entry: dict[str, Any] = {"file": str(path)}
        try:
            inputs.append(preprocess(_open(Path(path))))
        except InputError as err:
            entry["error"] = str(err)
        results.append(entry)
    if inputs:
        probabilities = np.asarray(model.predict(np.stack(inputs), batch_size=256, verbose=0), dtype=np.float64)
        rows = iter(probabilities)
        for entry in results:
            if "error" not in entry:
                row = next(rows)
                digit = int(np.argmax(row))
                entry.update(digit=digit, probability=float(row[digit]), probabilities=[float(p) for p in row])
    return results


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise InputError("no such file") from None
    except IsADirectoryError:
        raise InputError("is a directory, not an image") from None
    except UnidentifiedImageError:
        raise InputError("not an image (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError:
        raise InputError("image too large") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f"cannot read image ({err})") from None


def _grayscale(image: Image.Image) -> np.ndarray:
    """Luminance as float 0..255; transparent pixels become the background their ink contrasts with."""
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        light = np.asarray(rgba.convert("L"), dtype=np.float32)
        if alpha.min() < 1.0:
            ink_level = float((light * alpha).sum() / max(alpha.sum(), 1e-6))
            background = 255.0 if ink_level < 127.5 else 0.0
            return light * alpha + background * (1.0 - alpha)
        return light
    return np.asarray(image.convert("L"), dtype=np.float32)


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def _centre_of_mass_offset(digit: np.ndarray) -> tuple[int, int]:
    """Top-left corner that puts ``digit``'s centre of mass on the canvas centre, kept inside the canvas."""
    height, width = digit.shape
    total = digit.sum()
    rows, cols = np.indices(digit.shape)
    cy = (rows * digit).sum() / total if total > 0 else (height - 1) / 2
    cx = (cols * digit).sum() / total if total > 0 else (width - 1) / 2
    top = int(np.clip(round(_CANVAS / 2 - cy), 0, _CANVAS - height))
    left = int(np.clip(round(_CANVAS / 2 - cx), 0, _CANVAS - width))
    return top, left
