"""The final model: train an exported config on all training data, test it once, save it.

A sweep chose the config on the validation split; that choice is made, so the validation
images go back into training (the whole 60,000-image training set, as the tutorial trained its
final model) for the epochs the trial ran. The test set is used here, once, and nowhere else:
its accuracy is an honest estimate because nothing was chosen on it.

Outputs, each written atomically, in one folder (default ``studies/<study>/``):

- ``model.keras``: the trained model (``predict`` loads it);
- ``curves.html``: loss and accuracy per epoch (plotly, works offline);
- ``metrics.json``: test accuracy and loss, params, the whole config, epochs, seconds, seed,
  backend, library versions, the data used, and the per-epoch history. Written last, so its
  presence means the run finished.

Example:
    >>> result = train("studies/quick/best.yaml")
    >>> print(f"test accuracy: {result.test_accuracy:.4f}")
    test accuracy: 0.9803
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_sweep.config import SweepConfig, load_sweep
from mnist_sweep.data import Dataset, load_dataset
from mnist_sweep.errors import InputError
from mnist_sweep.export import fixed_params, study_dir
from mnist_sweep.files import atomic_path, write_text_atomic
from mnist_sweep.training import EpochHook

_VERSIONED = ("keras", "tensorflow", "jax", "jaxlib", "optuna", "numpy", "mnist-sweep")


@dataclass
class TrainResult:
    """What :func:`train` did and where it wrote it."""

    test_accuracy: float
    test_loss: float
    model_path: Path
    metrics_path: Path
    curves_path: Path
    params: dict[str, Any]
    seed: int
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def train(
    config: str | Path | SweepConfig,
    output: str | Path | None = None,
    data: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train the config's model on training + validation data, evaluate it on the test set once, save it.

    Args:
        config: an exported sweep file (every axis fixed) or its :class:`SweepConfig`.
        output: the model file, ``.keras`` (default ``studies/<study>/model.keras``, ``<study>``
            the exporting study, else the config's name); metrics and curves go beside it.
        data: a data source overriding the config's ``data.source``.
        epochs: overrides the config's ``epochs``.
        seed: weight-initialisation and shuffling seed (default: the config's ``seed``, which
            ``export`` sets to the trial's, so the trial's initial weights come back).
        on_epoch: called after each epoch with (epoch index, metrics), e.g. to print progress.

    Raises:
        InputError: the config is not fixed (one line per loose axis), the output is not
            ``.keras``, the data cannot be read, or training diverged.
    """
    filename = str(config) if not isinstance(config, SweepConfig) else f"config '{config.name}'"
    sweep = config if isinstance(config, SweepConfig) else load_sweep(config)
    params = fixed_params(sweep.space, filename)
    if epochs is not None:
        if epochs < 1:
            raise InputError(f"--epochs: want a whole number >= 1, got {epochs}")
        params["epochs"] = epochs
    seed = sweep.seed if seed is None else seed
    folder = sweep.source.study if sweep.source is not None else sweep.name
    model_path = Path(output) if output is not None else study_dir(folder) / "model.keras"
    if model_path.suffix != ".keras":
        raise InputError(f"{model_path}: the model file must end in .keras (Keras 3's format)")

    from mnist_sweep.model import build_model, count_params, use_backend

    backend = use_backend(sweep.training.backend)
    dataset = load_dataset(sweep.data, source=data).merge_validation()

    from mnist_sweep.training import fit, fresh_keras

    batch_size, n_epochs = int(params["batch_size"]), int(params["epochs"])
    fresh_keras(seed)
    model = build_model(params, steps_per_epoch=math.ceil(len(dataset.x_train) / batch_size),
                        steps_per_execution=sweep.training.steps_per_execution)
    start = time.perf_counter()
    fitted = fit(model, dataset.x_train, dataset.y_train, None, None, batch_size=batch_size, epochs=n_epochs,
                 on_epoch=on_epoch)
    seconds = time.perf_counter() - start
    if fitted.diverged:
        raise InputError(f"{filename}: training diverged ({fitted.stop_reason.removeprefix('diverged: ')}) "
                         f"with seed {seed}; nothing was saved")
    scores = model.evaluate(dataset.x_test, dataset.y_test, batch_size=1024, verbose=0, return_dict=True)

    with atomic_path(model_path) as tmp:
        model.save(tmp)
    curves_path = write_text_atomic(model_path.with_name("curves.html"), _curves_html(fitted.history, sweep.name))
    metrics = {
        "test_accuracy": float(scores["accuracy"]),
        "test_loss": float(scores["loss"]),
        "params": params,
        "epochs": n_epochs,
        "seconds": round(seconds, 3),
        "seconds_per_epoch": [round(s, 4) for s in fitted.epoch_seconds],
        "seed": seed,
        "n_params": count_params(model),
        "backend": backend,
        "versions": _versions(),
        "data": _describe_data(dataset, sweep, data),
        "history": fitted.history,
        "model": model_path.name,
        "config_file": filename if not isinstance(config, SweepConfig) else None,
        "config": sweep.model_dump(mode="json"),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    metrics_path = write_text_atomic(model_path.with_name("metrics.json"), json.dumps(metrics, indent=2) + "\n")
    return TrainResult(
        test_accuracy=metrics["test_accuracy"], test_loss=metrics["test_loss"], model_path=model_path,
        metrics_path=metrics_path, curves_path=curves_path, params=params, seed=seed, seconds=seconds,
        history=fitted.history,
    )


def _describe_data(dataset: Dataset, sweep: SweepConfig, override: str | None) -> dict[str, Any]:
    return {
        "source": override or sweep.data.source,
        "train_images": len(dataset.x_train),
        "test_images": len(dataset.x_test),
        "validation_size": sweep.data.validation_size,
        "train_size": sweep.data.train_size,
        "split_seed": sweep.data.seed,
        "note": "trained on the sweep's training and validation images together; the test set used once",
    }


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _curves_html(history: dict[str, list[float]], title: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for col, key in ((1, "loss"), (2, "accuracy")):
        values = history.get(key, [])
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines+markers",
                                 name=f"training {key}"), row=1, col=col)
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(title=f"{title}: final training on training + validation data", height=420)
    return fig.to_html(include_plotlyjs=True, full_html=True)
