"""Classify images with a trained model: image files, PIL images or MNIST-style arrays.

An image file or PIL image goes through the preprocessing the model's training images went
through, as the model records it (:func:`mnist_sweep.model.saving.preprocessing`; the steps are in
:mod:`mnist_sweep.data.images`): ``mnist`` for a model trained on MNIST-style digits (MNIST's own
normalisation: grayscale, white ink on black, cropped to the ink, scaled into a box of 20/28 of the
side, centred by mass; also every model saved before the style was recorded), ``resize`` for one
trained on an image folder (the whole image: grayscale, resized to the side, inverted when the
border is light, exactly as the folder's images were read). Arrays are taken as model inputs
already (side x side, white on black: uint8 0..255 or floats in [0, 1]) and only scaled. Each
prediction names its class by the model's class names
(:class:`mnist_sweep.model.layers.ClassNames`; a model saved without them has the ten digits).

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
from PIL import Image

from mnist_sweep.data.images import PREPROCESSING, open_image, preprocess
from mnist_sweep.errors import InputError
from mnist_sweep.model.saving import class_names, input_side, load_model, preprocessing


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
    side, names, style = input_side(model), class_names(model), preprocessing(model)
    x = np.stack([_as_input(item, i, side, style) for i, item in enumerate(_items(images, side))])
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


def _as_input(item: Any, index: int, side: int, style: str) -> np.ndarray:
    if isinstance(item, (str, Path)):
        try:
            return preprocess(open_image(Path(item)), side, style)
        except InputError as err:
            raise InputError(f"{item}: {err}") from None
    if isinstance(item, Image.Image):
        return preprocess(item, side, style)
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
    side, names, style = input_side(model), class_names(model), preprocessing(model)
    if style not in PREPROCESSING:
        raise InputError(f"the model's preprocessing {style!r} is unknown to this version "
                         f"(it knows {', '.join(PREPROCESSING)})")
    results: list[dict[str, Any]] = []
    inputs: list[np.ndarray] = []
    for path in paths:
        entry: dict[str, Any] = {"file": str(path)}
        try:
            inputs.append(preprocess(open_image(Path(path)), side, style))
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


