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
    >>> final = train_final(best_config(study))          # studies/<study>/model.keras, ...
    >>> print(f"test accuracy: {final.test_accuracy:.4f}")
    test accuracy: 0.9803
    >>> final.model.predict(x[:1])
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnist_sweep._base.files import atomic_path, write_text_atomic
from mnist_sweep._base.paths import study_dir
from mnist_sweep._base.provenance import check_same_data, collect
from mnist_sweep._base.settings import prepare_process
from mnist_sweep.data.dataset import load_dataset
from mnist_sweep.errors import InputError
from mnist_sweep.final.result import FinalModel
from mnist_sweep.final.shipping import CARD_NAME, ONNX_NAME, export_onnx, write_model_card
from mnist_sweep.model.factory import build_model, count_params
from mnist_sweep.model.training import EpochHook, fit, fresh_keras
from mnist_sweep.sweep.config import SweepConfig, parse_sweep
from mnist_sweep.sweep.loader import load_sweep
from mnist_sweep.sweep.params import fixed_params


def _as_sweep(config: str | Path | Mapping[str, Any] | SweepConfig) -> tuple[SweepConfig, str]:

    if isinstance(config, SweepConfig):
        return config, f"config '{config.name}'"
    if isinstance(config, Mapping):
        name = str(config.get("name", "config"))
        return parse_sweep(config, f"config '{name}'", default_name=name), f"config '{name}'"
    return load_sweep(config), str(config)


def train_final(
    config: str | Path | Mapping[str, Any] | SweepConfig,
    *,
    output_dir: str | Path | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    data: str | None = None,
    model_name: str = "model.keras",
    on_epoch: EpochHook | None = None,
    onnx: bool = False,
) -> FinalModel:
    """Train the config's model on training + validation data, evaluate it on the test set once, save it.

    Args:
        config: an exported config (every axis fixed): the mapping :func:`~mnist_sweep.best_config`
            returns, a sweep file written by ``export``, or its :class:`SweepConfig`.
        output_dir: where ``model.keras``, ``metrics.json`` and ``curves.html`` go (default
            ``studies/<study>/``, ``<study>`` the exporting study, else the config's name).
        epochs: overrides the config's ``epochs``.
        seed: weight-initialisation and shuffling seed (default: the config's ``seed``, which
            ``export`` sets to the trial's, so the trial's initial weights come back).
        data: a data source overriding the config's ``data.source``.
        model_name: the model's file name in ``output_dir`` (a ``.keras`` file).
        on_epoch: called after each epoch with (epoch index, metrics), e.g. to print progress.
        onnx: also write ``model.onnx``, checked against Keras on the test images
            (:mod:`mnist_sweep.final.shipping`). ``MODEL_CARD.md`` is always written.

    Raises:
        InputError: the config is not fixed (one line per loose axis), the model file is not
            ``.keras``, the data cannot be read or changed since the study the config was exported
            from recorded them (one line naming what changed; nothing written), or training diverged.
    """
    sweep, filename = _as_sweep(config)
    params = fixed_params(sweep.space, filename)
    if epochs is not None:
        if epochs < 1:
            raise InputError(f"--epochs: want a whole number >= 1, got {epochs}")
        params["epochs"] = epochs
    seed = sweep.seed if seed is None else seed
    folder = Path(output_dir) if output_dir is not None else study_dir(
        sweep.source.study if sweep.source is not None else sweep.name)
    model_path = folder / model_name
    if model_path.suffix != ".keras":
        raise InputError(f"{model_path}: the model file must end in .keras (Keras 3's format)")


    backend = prepare_process(sweep.training.backend)


    dataset = load_dataset(sweep.data, source=data)
    if sweep.source is not None and (data is None or data == sweep.data.source):  # --data DIR: other data on purpose
        check_same_data(sweep.source.provenance, dataset, sweep.source.study,
                        f"{filename} was exported from it: restore the data, or run and export a new study")
    dataset = dataset.merge_validation()
    batch_size, n_epochs = int(params["batch_size"]), int(params["epochs"])
    fresh_keras(seed)
    model = build_model(params, steps_per_epoch=math.ceil(len(dataset.x_train) / batch_size),
                        steps_per_execution=sweep.training.steps_per_execution,
                        input_size=dataset.x_train.shape[1], class_names=dataset.class_names,
                        preprocessing=dataset.preprocessing)
    start = time.perf_counter()
    fitted = fit(model, dataset.x_train, dataset.y_train, None, None, batch_size=batch_size, epochs=n_epochs,
                 on_epoch=on_epoch)
    seconds = time.perf_counter() - start
    if fitted.diverged:
        raise InputError(f"{filename}: training diverged ({fitted.stop_reason.removeprefix('diverged: ')}) "
                         f"with seed {seed}; nothing was saved")
    scores = model.evaluate(dataset.x_test, dataset.y_test, batch_size=1024, verbose=0, return_dict=True)

    provenance = collect(dataset, backend)
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
        "provenance": provenance,
        "data": {"source": data or sweep.data.source, "train_images": len(dataset.x_train),
                 "test_images": len(dataset.x_test), "validation_size": sweep.data.validation_size,
                 "train_size": sweep.data.train_size, "split_seed": sweep.data.seed,
                 "sha256": provenance["data"]["sha256"],
                 "note": "trained on the sweep's training and validation images together; the test set used once"},
        "history": fitted.history,
        "model": model_path.name,
        "config_file": filename if not isinstance(config, (SweepConfig, Mapping)) else None,
        "config": sweep.model_dump(mode="json"),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    # metrics.json last: its presence means the run finished. A stale one (and the curves) from an
    # earlier run go first, as final_model does, so an interrupted run never leaves a new model
    # beside the old metrics: it leaves the old model, or the new one, without metrics.
    metrics_file, curves_file = model_path.with_name("metrics.json"), model_path.with_name("curves.html")
    for stale in (metrics_file, curves_file, model_path.with_name(ONNX_NAME), model_path.with_name(CARD_NAME)):
        stale.unlink(missing_ok=True)
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    curves_path = write_text_atomic(curves_file, _curves_html(fitted.history, sweep.name))
    if onnx:
        metrics.update(export_onnx(model, folder, dataset.x_test))
    write_model_card(folder, metrics)
    metrics_path = write_text_atomic(metrics_file, json.dumps(metrics, indent=2) + "\n")
    return FinalModel(model=model, test_accuracy=metrics["test_accuracy"], metrics=metrics, model_path=model_path,
                      metrics_path=metrics_path, curves_path=curves_path)


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
