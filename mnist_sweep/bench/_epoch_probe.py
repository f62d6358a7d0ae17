"""Seconds per epoch of the tutorial's model 4, measured in a fresh process (used by ``bench``).

``python -m mnist_sweep.bench._epoch_probe {tutorial|ours|augmentation} --backend B --batch-size N --epochs E``
prints one JSON object. Each measurement gets its own process so backends and compiled
functions never leak between measurements.

- ``tutorial``: the tutorial's own code path: ``keras.Sequential`` of Dense/Dropout layers,
  ``model.fit(x, y, validation_split=0.2)`` on float32 numpy (60,000 images: 48,000 train,
  12,000 validation), Adam, no other settings.
- ``ours``: the same model from :func:`mnist_sweep.model.factory.build_model`, trained by
  :func:`mnist_sweep.model.training.fit` on the same 48,000 + 12,000 images, with the sweep defaults;
- ``augmentation``: ``ours`` and ``ours`` with the training batches randomly shifted, rotated and
  scaled (:data:`AUGMENTATION`), both in one process, their epochs paired and the order within a
  pair alternated (plain, augmented | augmented, plain | ...): the price of augmentation per epoch
  is the ratio within each pair (``pair_ratios``, augmented / plain), the two epochs seconds apart,
  so the machine's drift (tens of percent from one minute to the next) does not decide it, and a
  steady drift within a pair cancels between the two orders.

The figure is the fastest epoch after the first (the first one includes tracing/compiling).
The probe writes nothing; the bench starts it in a scratch folder all the same.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from mnist_sweep._base.settings import use_backend
from mnist_sweep.data.dataset import load_arrays, load_dataset
from mnist_sweep.model.factory import TUTORIAL_MODELS, build_model
from mnist_sweep.model.training import fit, fresh_keras
from mnist_sweep.sweep.config import DataConfig, TrainingConfig


def _tutorial(batch_size: int, epochs: int) -> list[float]:
    import keras  # only after main() chose the backend (use_backend), which Keras reads when imported

    arrays = load_arrays("bundled")
    x = arrays["x_train"].reshape(60000, 784).astype("float32") / 255
    y = arrays["y_train"]
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.3),
        keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.3),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seconds: list[float] = []

    class _Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            seconds.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_split=0.2, verbose=0, callbacks=[_Timer()])
    return seconds


#: The augmentation whose cost the bench prices: shifts of 2 pixels, 10 degrees, 10% scaling.
AUGMENTATION = {"augment_shift": 2.0, "augment_rotation": 10.0, "augment_scale": 0.1}


def _augmentation(batch_size: int, epochs: int) -> dict[str, list[float]]:
    ds = _split()
    fresh_keras(seed=0)
    plain, augmented = _ours_model(batch_size), _ours_model(batch_size, AUGMENTATION)
    seconds: dict[str, list[float]] = {"epoch_seconds": [], "augmented_epoch_seconds": []}
    pair = [("epoch_seconds", plain), ("augmented_epoch_seconds", augmented)]
    for epoch in range(epochs):
        for key, model in pair if epoch % 2 == 0 else pair[::-1]:
            seconds[key] += fit(model, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=batch_size,
                                epochs=1).epoch_seconds
    return seconds


def pair_ratios(seconds: dict[str, list[float]]) -> list[float]:
    """Augmented / plain epoch seconds of each pair after the first (which includes compiling)."""
    pairs = list(zip(seconds["epoch_seconds"], seconds["augmented_epoch_seconds"], strict=True))[1:]
    return [augmented / plain for plain, augmented in pairs]


def _split() -> Any:
    """The tutorial's split of the 60,000 training images: 48,000 to train on, 12,000 to validate."""
    return load_dataset(DataConfig(validation_size=12000))


def _ours_model(batch_size: int, extra: dict[str, float] | None = None) -> Any:
    """The tutorial's model 4 from :func:`build_model`, with ``extra`` params (augmentation) if given."""
    params = {**TUTORIAL_MODELS[3], **(extra or {}), "batch_size": batch_size}
    return build_model(params, steps_per_execution=TrainingConfig().steps_per_execution)


def _ours(batch_size: int, epochs: int) -> list[float]:
    ds = _split()
    fresh_keras(seed=0)
    model = _ours_model(batch_size)
    return fit(model, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=batch_size, epochs=epochs).epoch_seconds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_sweep.bench._epoch_probe")
    parser.add_argument("path", choices=["tutorial", "ours", "augmentation"])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    backend = use_backend(args.backend)
    if args.path == "augmentation":
        pairs = _augmentation(args.batch_size, args.epochs)
        print(json.dumps({"path": args.path, "backend": backend, "batch_size": args.batch_size,
                          "epoch_s": _fastest(pairs["epoch_seconds"]),
                          "augmented_epoch_s": _fastest(pairs["augmented_epoch_seconds"]),
                          "pair_ratios": pair_ratios(pairs), **pairs}))
        return
    seconds = {"tutorial": _tutorial, "ours": _ours}[args.path](args.batch_size, args.epochs)
    print(json.dumps({"path": args.path, "backend": backend, "batch_size": args.batch_size,
                      "epoch_s": _fastest(seconds), "epoch_seconds": seconds}))


def _fastest(seconds: list[float]) -> float:
    """The fastest epoch after the first (which includes tracing and compiling)."""
    return min(seconds[1:] or seconds)


if __name__ == "__main__":
    main()
