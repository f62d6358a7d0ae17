"""Classify images with a trained model: image files, PIL images or MNIST-style arrays.

An MLP trained on MNIST only knows MNIST's conventions, so an image file or PIL image is first
made to look like an MNIST digit (:func:`preprocess`, the steps of MNIST's own normalisation):
grayscale, white ink on black (inverted when the border is light), cropped to the ink, scaled
to fit 20 x 20 keeping its aspect ratio, placed on 28 x 28 with its centre of mass at the
centre, in [0, 1]; for a model of another input size the same at its size (a box of 20/28 of
the side). Arrays are taken as model inputs already (side x side, white on black: uint8 0..255
or floats in [0, 1]) and only scaled. Each prediction names its class by the model's class names
(:class:`mnist_sweep.layers.ClassNames`; a model saved without them has the ten digits).

Example:
    >>> predictions = predict("studies/quick/model.keras", x_test[:3])
    >>> [(p.digit, round(p.probability, 3)) for p in predictions]
    [(7, 0.998), (2, 0.991), (1, 0.999)]
    >>> predict_files(load_model("studies/quick/model.keras"), ["seven.png"])
    [{'file': 'seven.png', 'digit': 7, 'probability': 0.998, 'probabilities': [...]}]
"""

from __future__ import annotations

import re
import struct
import threading
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_sweep.errors import InputError

MAX_IMAGE_PIXELS = 40_000_000  # width x height an image may have; a phone photo has 12 megapixels
_DECODE_LOCK = threading.Lock()
_BOX_SHARE = 20 / 28  # MNIST puts each digit in a 20 x 20 box on 28 x 28
_INK_THRESHOLD = 0.25  # of the darkest-to-lightest range: what counts as the digit for cropping


class ImageTooLarge(InputError):
    """An image over :data:`MAX_IMAGE_PIXELS`, refused before it was decoded."""


def preprocess(image: Image.Image, side: int = 28) -> np.ndarray:
    """An image of one digit as a model input: ``side * side`` float32 values in [0, 1], white on black
    (784 for MNIST's 28 x 28).

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
    scale = max(1, round(side * _BOX_SHARE)) / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    patch = Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(patch, dtype=np.float32) / 255.0
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = _centre_of_mass_offset(digit, side)
    canvas[top: top + digit.shape[0], left: left + digit.shape[1]] = digit
    return canvas.reshape(-1)


def load_model(path: str | Path) -> Any:
    """Load a ``.keras`` model saved by ``train`` (safe mode: no arbitrary code from the file).

    Raises:
        InputError: not a ``.keras`` file, missing, unreadable, or not a model of flattened square images.
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
    inputs = shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else 0
    if inputs < 16 or int(round(inputs ** 0.5)) ** 2 != inputs:
        raise InputError(f"{path}: not a model of flattened square images (input shape {shape}, want (None, 784) "
                         "or another square count)")
    return model


def input_side(model: Any) -> int:
    """The side of the square images ``model`` takes (28 for MNIST)."""
    return int(round(int(model.input_shape[-1]) ** 0.5))


def class_names(model: Any) -> tuple[str, ...]:
    """The names of ``model``'s classes, in output order: as saved with it, else its outputs' numbers."""
    from mnist_sweep.layers import ClassNames

    for layer in reversed(model.layers):
        if isinstance(layer, ClassNames):
            return tuple(layer.names)
    return tuple(str(i) for i in range(int(model.output_shape[-1])))


@dataclass(frozen=True)
class Prediction:
    """One image's class: its ``label`` (the class name), ``index``, ``probability`` and every class's
    ``probabilities``; ``digit`` is the index for a model of the ten digits, else None."""

    label: str
    index: int
    probability: float
    probabilities: tuple[float, ...]
    digit: int | None = None

    def __getitem__(self, key: str) -> Any:
        """``p["label"]`` as well as ``p.label``, like the dicts ``predict --json`` prints."""
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["digit"] is None:
            del data["digit"]
        return data


def _prediction(row: np.ndarray, names: tuple[str, ...]) -> Prediction:
    index = int(np.argmax(row))
    digits = names == tuple(str(d) for d in range(10))
    return Prediction(names[index], index, float(row[index]), tuple(float(p) for p in row), index if digits else None)


def predict(model: Any, images: Any) -> list[Prediction]:
    """Classify ``images`` with ``model`` (a Keras model, or the path of a ``.keras`` file).

    Args:
        images: one image or a sequence of them: file paths, PIL images, or arrays in the model's
            layout (side x side, or side * side values: 28 x 28 or 784 for MNIST; uint8 0..255 or
            floats in [0, 1]; white on black). A batch array (n x side x side, n x side * side) is n images.

    Returns:
        One :class:`Prediction` per image, in order.

    Raises:
        InputError: an image that cannot be read or has the wrong shape, naming it.
    """
    if isinstance(model, (str, Path)):
        model = load_model(model)
    side, names = input_side(model), class_names(model)
    x = np.stack([_as_input(item, i, side) for i, item in enumerate(_items(images, side))])
    probabilities = np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float64)
    return [_prediction(row, names) for row in probabilities]


def _items(images: Any, side: int) -> list[Any]:
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3 or (images.ndim == 2 and images.shape[1] == side * side):
            return list(images)
        return [images]
    return list(images)


def _as_input(item: Any, index: int, side: int) -> np.ndarray:
    if isinstance(item, (str, Path)):
        try:
            return preprocess(open_image(Path(item)), side)
        except InputError as err:
            raise InputError(f"{item}: {err}") from None
    if isinstance(item, Image.Image):
        return preprocess(item, side)
    array = np.asarray(item)
    if array.size != side * side or array.ndim not in (1, 2):
        raise InputError(f"image {index}: an array of shape {array.shape}, want {side} x {side} or "
                         f"{side * side} values")
    scaled = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    if scaled.size and (scaled.min() < 0.0 or scaled.max() > 1.0):
        raise InputError(f"image {index}: float values outside [0, 1] (uint8 arrays are scaled by 1/255)")
    return scaled.reshape(-1)


def predict_files(model: Any, paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Classify each image file; a file that cannot be read gets an ``error`` entry instead
    (what ``predict FILE...`` prints). ``model`` is a Keras model or a ``.keras`` path.

    Returns:
        One dict per path, in order: ``file``, then ``label`` (the class name), ``index``,
        ``probability``, ``probabilities`` (one per class) and, for a model of the ten digits,
        ``digit``; or ``error`` (one line).
    """
    if isinstance(model, (str, Path)):
        model = load_model(model)
    side, names = input_side(model), class_names(model)
    results: list[dict[str, Any]] = []
    inputs: list[np.ndarray] = []
    for path in paths:
        entry: dict[str, Any] = {"file": str(path)}
        try:
            inputs.append(preprocess(open_image(Path(path)), side))
        except InputError as err:
            entry["error"] = str(err)
        results.append(entry)
    if inputs:
        probabilities = np.asarray(model.predict(np.stack(inputs), batch_size=256, verbose=0), dtype=np.float64)
        rows = iter(probabilities)
        for entry in results:
            if "error" not in entry:
                entry.update(_prediction(next(rows), names).to_dict())
    return results


def open_image(source: str | Path | BinaryIO) -> Image.Image:
    """Decode one image (a path or a binary file object) fully into memory, within :data:`MAX_IMAGE_PIXELS`.

    The size is checked from the header, before any pixel is decoded (``Image.open`` reads only the
    header), and Pillow's own decompression-bomb warning is an error here too: a digit photo never
    needs 40 megapixels, and a 13000 x 13000 PNG would take gigabytes to decode.

    Raises:
        ImageTooLarge: over the pixel limit (callers name the file: ``predict`` prints the path,
            ``serve`` answers 413).
        InputError: missing, a directory, not an image Pillow reads, or undecodable.
    """
    try:
        with _DECODE_LOCK, warnings.catch_warnings():  # the lock: warning filters are process-wide
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageTooLarge(f"image of {width} x {height} pixels, over the limit of "
                                        f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels")
                image.load()
                return image.copy()
    except FileNotFoundError:
        raise InputError("no such file") from None
    except IsADirectoryError:
        raise InputError("is a directory, not an image") from None
    except UnidentifiedImageError:
        raise InputError("not an image (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # Pillow's check, in open()
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        raise ImageTooLarge(f"image of {pixels[1] if pixels else 'too many'} pixels, over the limit of "
                            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as err:
        raise InputError(f"cannot read image ({str(err)[:200]})") from None


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


def _centre_of_mass_offset(digit: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left corner that puts ``digit``'s centre of mass on the canvas centre, kept inside the canvas."""
    height, width = digit.shape
    total = digit.sum()
    rows, cols = np.indices(digit.shape)
    cy = (rows * digit).sum() / total if total > 0 else (height - 1) / 2
    cx = (cols * digit).sum() / total if total > 0 else (width - 1) / 2
    top = int(np.clip(round(side / 2 - cy), 0, side - height))
    left = int(np.clip(round(side / 2 - cx), 0, side - width))
    return top, left
