"""Load a saved ``.keras`` model safely, and read what it carries: its input side, class names and
the preprocessing its training images went through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_sweep._base.settings import keras_without_tensorflow, use_backend
from mnist_sweep.errors import InputError


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

    use_backend("auto")  # a fresh process (a notebook that only predicts) gets the fast backend too
    import keras

    import mnist_sweep.model.layers  # noqa: F401 - registers the custom layers the saved model names

    keras_without_tensorflow()  # a model loaded to be saved again (final) imports no TensorFlow either
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
    from mnist_sweep.model.layers import ClassNames

    for layer in reversed(model.layers):
        if isinstance(layer, ClassNames):
            return tuple(layer.names)
    return tuple(str(i) for i in range(int(model.output_shape[-1])))


def preprocessing(model: Any) -> str:
    """The preprocessing ``model``'s training images went through (``mnist`` or ``resize``, see
    :mod:`mnist_sweep.data.images`): give an image file to it the same way, e.g.
    ``preprocess(open_image(path), input_side(model), preprocessing(model))``. A model saved
    without it (before it was recorded, or built elsewhere) has ``mnist``."""
    from mnist_sweep.model.layers import ClassNames

    for layer in reversed(model.layers):
        if isinstance(layer, ClassNames):
            return layer.preprocessing
    return "mnist"
