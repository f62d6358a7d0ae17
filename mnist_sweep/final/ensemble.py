"""``final``: the final model of a study from its kept models, chosen on validation, tested once.

The candidates are the study's best kept model alone and the ensembles that average the class
probabilities of its best 2, 3, ... K kept models (:mod:`mnist_sweep.search.kept_models`; no retraining).
Each is scored on the study's validation images, the split the sweep chose its trials on; the
best scorer wins (on a tie, the one with fewer members). Only the winner is evaluated on the test
set, once; the best single member's test accuracy is reported beside it for comparison, and
steers nothing. A retrain on all training data cannot be scored on validation (it trains on those
images), so it is not a candidate here: ``train`` does that.

Outputs, each written atomically, in one folder (default ``studies/<study>/final/``):
``model.keras`` (one file, loaded by ``predict`` like any other model) and ``metrics.json``
(``test_accuracy``, ``members``, ``best_member_test_accuracy``, ``seconds``, the candidates'
validation accuracies, the model's parameter count and measured latency, provenance), written last.

A budget (``max_params``, ``max_latency_ms``) restricts the candidates to kept models within it,
an ensemble counting its members' costs together; the kept models include the Pareto fronts of
accuracy against both costs (:mod:`mnist_sweep.search.kept_models`), so the best trial within any one
budget is among them.

Example:
    >>> final = build_final(load_study("sqlite:///studies/mnist_sweep.db", "default"), k=5)
    >>> final.test_accuracy, final.members
    (0.9931, [97, 40, 12])
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from mnist_sweep._base.files import atomic_path, write_text_atomic
from mnist_sweep._base.paths import study_dir
from mnist_sweep._base.provenance import check_same_data, collect
from mnist_sweep._base.settings import prepare_process
from mnist_sweep.data.dataset import load_dataset
from mnist_sweep.errors import InputError
from mnist_sweep.final.result import FinalModel
from mnist_sweep.final.shipping import CARD_NAME, ONNX_NAME, export_onnx, write_model_card
from mnist_sweep.model.factory import count_params
from mnist_sweep.model.latency import measure_inference
from mnist_sweep.model.saving import class_names, preprocessing
from mnist_sweep.search.confirmation import trial_rank
from mnist_sweep.search.kept_models import kept_models, load_kept_model
from mnist_sweep.search.study import FINAL_ATTR
from mnist_sweep.sweep.config import DataConfig


def build_final(study: optuna.Study, output_dir: str | Path | None = None, k: int | None = None, *,
                max_params: int | None = None, max_latency_ms: float | None = None, onnx: bool = False) -> FinalModel:
    """Choose the final model among the study's kept models on validation, test it once, save it.

    Args:
        study: a study whose sweep kept models (``keep.models`` >= 1).
        output_dir: default ``studies/<study>/final``.
        k: ensembles of up to this many members are tried (default: every kept model).
        max_params: only models (an ensemble: its members together) of at most this many parameters.
        max_latency_ms: only models whose latency for one image (an ensemble: its members' summed) is
            at most this, as the trials measured it on the machine that ran them.
        onnx: also write ``model.onnx``, checked against Keras on the test images
            (:mod:`mnist_sweep.final.shipping`). ``MODEL_CARD.md`` is always written.

    Raises:
        InputError: the study kept no model (within the budget), ``k`` < 1, or the data changed since
            the study recorded them (one line naming what changed; nothing written).

    Example:
        >>> build_final(study, max_params=300_000).metrics["n_params"] <= 300_000
        True
    """

    started = time.perf_counter()
    if k is not None and k < 1:
        raise InputError(f"-k: want a whole number >= 1, got {k}")
    kept = kept_models(study)
    if not kept:
        raise InputError(f"study '{study.study_name}' kept no trained model (its sweep's keep.models is 0, or no "
                         "trial has finished COMPLETE yet); train one with: python -m mnist_sweep export, then train")
    budget = {key: limit for key, limit in (("n_params", max_params), ("latency_ms_batch1", max_latency_ms))
              if limit is not None}
    rank = trial_rank(study.get_trials(deepcopy=False))  # confirmed configs first, by their mean
    kept = sorted(kept, key=lambda m: (rank.get(m.trial, len(rank)), -m.value, m.trial))
    kept = _within(kept, budget, study.study_name)[: k or len(kept)]
    backend = prepare_process("auto")
    sweep = study.user_attrs.get("sweep") or {}
    dataset = load_dataset(DataConfig.model_validate(sweep.get("data", {})))
    check_same_data(study.user_attrs.get("provenance"), dataset, study.study_name,  # before anything is written
                    "its kept models were trained and chosen on the data as they were: restore them, or run a "
                    "new study")
    members = [load_kept_model(study, m.trial) for m in kept]
    val_probabilities = [_probabilities(m, dataset.x_val) for m in members]
    candidates = {n: _accuracy(np.mean(val_probabilities[:n], axis=0), dataset.y_val) for n in range(1, len(kept) + 1)}
    size = max(candidates, key=lambda n: (candidates[n], -n))
    model = members[0] if size == 1 else _average(members[:size], [m.trial for m in kept[:size]])
    test_accuracy = _accuracy(_probabilities(model, dataset.x_test), dataset.y_test)
    best_member_test = test_accuracy if size == 1 else _accuracy(_probabilities(members[0], dataset.x_test),
                                                                  dataset.y_test)
    folder = Path(output_dir) if output_dir is not None else study_dir(study.study_name) / "final"
    metrics = {
        "test_accuracy": test_accuracy,
        "members": [m.trial for m in kept[:size]],
        "best_member_test_accuracy": best_member_test,
        "validation_accuracy": candidates[size],
        "candidates": {f"top {n}": round(v, 6) for n, v in candidates.items()},
        "member_validation_accuracy": {str(m.trial): m.value for m in kept[:size]},
        "n_params": sum(count_params(m) for m in members[:size]),
        **measure_inference(model),
        "budget": {"max_params": max_params, "max_latency_ms": max_latency_ms},
        "seconds": round(time.perf_counter() - started, 3),
        "study": study.study_name,
        "backend": backend,
        "provenance": collect(dataset, backend),
        "note": "chosen on the validation split among the kept models and their averages; the test set used once",
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    metrics_path = folder / "metrics.json"
    for stale in (metrics_path, folder / ONNX_NAME, folder / CARD_NAME):  # no new model beside an older run's files
        stale.unlink(missing_ok=True)
    with atomic_path(folder / "model.keras") as tmp:
        model.save(tmp)
    if onnx:
        metrics.update(export_onnx(model, folder, dataset.x_test))
    write_model_card(folder, metrics, {m.trial: study.trials[m.trial].params for m in kept[:size]})
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2) + "\n")  # last: the run finished
    study.set_user_attr(FINAL_ATTR, {"test_accuracy": test_accuracy, "members": metrics["members"],
                                     "date": metrics["date"]})  # the report's accuracy ladder shows it
    return FinalModel(model=model, test_accuracy=test_accuracy, members=metrics["members"], metrics=metrics,
                      model_path=folder / "model.keras", metrics_path=metrics_path)


def _within(kept: list[Any], budget: dict[str, float], study_name: str) -> list[Any]:
    """The kept models, best first, that an ensemble may grow through without leaving ``budget``: each
    fits alone, and the running sums of the costs stay within it."""
    if not budget:
        return kept
    chosen, spent = [], dict.fromkeys(budget, 0.0)
    for model in kept:
        costs = {key: getattr(model, key) for key in budget}
        if any(c is None for c in costs.values()) or any(spent[key] + costs[key] > budget[key] for key in budget):
            continue
        chosen.append(model)
        spent = {key: spent[key] + costs[key] for key in budget}
    if not chosen:
        limits = ", ".join(f"{_FLAG[key]} {limit:g}" for key, limit in budget.items())
        smallest = {key: min((getattr(m, key) for m in kept if getattr(m, key) is not None), default=None)
                    for key in budget}
        found = ", ".join(f"{key} {value:g}" for key, value in smallest.items() if value is not None) or "no costs"
        raise InputError(f"study '{study_name}' kept no model within {limits} (the cheapest kept: {found}); "
                         "a wider budget, or a sweep over smaller models, would")
    return chosen


_FLAG = {"n_params": "--max-params", "latency_ms_batch1": "--max-latency-ms"}


def _probabilities(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=1024, verbose=0), dtype=np.float64)


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def _average(members: list[Any], trials: list[int]) -> Any:
    """One Keras model that averages the members' class probabilities."""
    import keras

    from mnist_sweep.model.layers import ClassNames

    inputs = keras.Input(shape=members[0].input_shape[1:])
    for member, trial in zip(members, trials, strict=True):
        member.name = f"trial_{trial}"  # nested models need unique names
    outputs = keras.layers.Average()([member(inputs) for member in members])
    names = ClassNames(class_names(members[0]), preprocessing(members[0]))  # what the members were trained on
    return keras.Model(inputs, names(outputs), name=f"ensemble_of_{len(members)}")
