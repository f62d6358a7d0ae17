"""The accuracy ladder: a study's best validation accuracy and its final model's test accuracy among
the published MNIST results, each with its source, and the training compute spent beside theirs.

The study's compute is estimated from its trials' params (:mod:`mnist_sweep.model.costs`: the
training FLOPs of one image times the images and epochs each trial ran); the final model's test
accuracy is what ``final`` recorded on the study (``final_test``), absent before it runs. Published
compute is given where the paper allows an estimate, else left out.

Example:
    >>> ladder_figure(study.get_trials(), study.user_attrs).show()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from mnist_sweep.model.costs import training_flops_per_image
from mnist_sweep.search.study import FINAL_ATTR

#: (name, lowest and highest test accuracy reported, source, training PFLOP or None).
RUNGS: list[tuple[str, float, float, str, float | None]] = [
    ("the tutorial's hand-tuned MLPs", 0.9824, 0.9824, "the TensorFlow tutorial this project grows from", None),
    ("Keras's MLP example", 0.984, 0.984, "keras.io examples, mnist_mlp", None),
    ("MLP, Simard et al. 2003", 0.993, 0.993, "Simard, Steinkraus, Platt, ICDAR 2003", None),
    ("MLP, Ciresan et al. 2010", 0.9965, 0.9965, "Ciresan et al., Neural Computation 22(12), 2010", 3.5),
    ("simple CNNs with augmentation", 0.996, 0.998, "e.g. An et al. 2020, arXiv:2008.10400", None),
    ("ensembles of simple CNNs", 0.9987, 0.9991, "An et al. 2020, arXiv:2008.10400", None),
]


def study_pflop(trials: Sequence[FrozenTrial], train_images: int, side: int = 28, classes: int = 10) -> float:
    """Training compute of the study's finished trials, in PFLOP (10^15 floating-point operations)."""
    total = 0.0
    for trial in trials:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            epochs = int(trial.user_attrs.get("epochs_run") or len(trial.intermediate_values) or 0)
            total += training_flops_per_image(trial.params, side, classes) * train_images * epochs
    return total / 1e15


def ladder_figure(trials: Sequence[FrozenTrial], study_attrs: Mapping[str, Any]) -> go.Figure | str:
    """The ladder (a note instead when no trial has finished)."""
    values = [t.values[0] for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not values:
        return "no COMPLETE trial yet: nothing to place on the ladder"
    data = (study_attrs.get("sweep") or {}).get("data") or {}
    signature = study_attrs.get("data_signature") or {}
    side, classes = int(signature.get("side") or 28), len(signature.get("class_names") or range(10))
    train_images = int(data.get("train_size") or 50000)
    pflop = study_pflop(trials, train_images, side, classes)
    final = study_attrs.get(FINAL_ATTR) or {}
    rows = [(name, low, high, f"{source}" + (f"; about {p:g} PFLOP of training" if p else ""))
            for name, low, high, source, p in RUNGS]
    rows.append(("this study: best validation accuracy", max(values), max(values),
                 f"{len(values)} COMPLETE trials, about {pflop:.3g} PFLOP of training"))
    if final.get("test_accuracy") is not None:
        rows.append(("this study: final model, test accuracy", final["test_accuracy"], final["test_accuracy"],
                     f"final, members {final.get('members')}"))
    rows.sort(key=lambda row: row[1])
    fig = go.Figure()
    for name, low, high, source in rows:
        ours = name.startswith("this study")
        fig.add_trace(go.Scatter(
            x=[100 * low, 100 * high] if high > low else [100 * low], y=[name] * (2 if high > low else 1),
            mode="lines+markers", line={"width": 8}, marker={"size": 12, "symbol": "star" if ours else "circle"},
            name=name, hovertext=source, hoverinfo="text+x", showlegend=False))
    lowest = min(98.0, 100 * min(row[1] for row in rows) - 0.2)
    fig.update_layout(height=120 + 40 * len(rows), margin={"l": 300},
                      xaxis={"title": "accuracy (%), MNIST test set unless marked validation",
                             "range": [lowest, 100.0]})
    return fig
