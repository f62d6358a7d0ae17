"""Figures of single trials: the learning curves of the best trials, and winner confirmation's
re-runs of the best configs with other seeds (each config's runs, mean and spread)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from mnist_sweep.results.accuracy_axis import scored_points
from mnist_sweep.search.confirmation import config_groups

CURVE_TRIALS = 5

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _finite(values: Sequence[Any]) -> list[float | None]:
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]


def curves_figure(trials: Sequence[FrozenTrial]) -> go.Figure | str:
    ranked = sorted(((t, s) for t, s in scored_points(trials) if t.user_attrs.get("history")),
                    key=lambda ts: (-ts[1], ts[0].number))[:CURVE_TRIALS]
    if not ranked:
        return "No trial recorded per-epoch metrics."
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"), horizontal_spacing=0.08)
    for i, (trial, score) in enumerate(ranked):
        history, color = trial.user_attrs["history"], PALETTE[i % len(PALETTE)]
        label = f"trial {trial.number} ({score:.4f}{'' if trial.state == TrialState.COMPLETE else ', pruned'})"
        for col, metric in ((1, "accuracy"), (2, "loss")):
            for prefix, dash in (("val_", "solid"), ("", "dot")):
                values = _finite(history.get(prefix + metric, []))
                fig.add_trace(go.Scatter(
                    x=list(range(1, len(values) + 1)), y=values, mode="lines+markers",
                    line={"color": color, "dash": dash}, marker={"size": 5}, legendgroup=str(trial.number),
                    name=label, showlegend=col == 1 and prefix == "val_",
                    hovertemplate=f"trial {trial.number} {'validation' if prefix else 'train'} {metric}"
                                  "<br>epoch %{x}: %{y:.4f}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(height=440)
    return fig


def confirmation_figure(trials: Sequence[FrozenTrial]) -> go.Figure | str:
    """Each confirmed config's runs (dots) with their mean and standard deviation (bars), best first."""
    groups = [g for g in config_groups(trials) if g.runs > 1]
    if not groups:
        return "No config was re-run with other seeds (the sweep's confirm.top is 0, or its search has not ended)."
    labels = [f"trial {g.trial}" for g in groups]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=labels, y=[g.mean for g in groups], mode="markers", name="mean ± std",
        marker={"symbol": "line-ew-open", "size": 28, "color": "#d62728"},
        error_y={"type": "data", "array": [g.std for g in groups], "visible": True},
        hovertemplate="%{x}: mean %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=[label for label, g in zip(labels, groups, strict=True) for _ in g.values],
        y=[v for g in groups for v in g.values], mode="markers", name="one run (seed)",
        customdata=[n for g in groups for n in g.numbers], marker={"color": "#1f77b4", "size": 8, "opacity": 0.8},
        hovertemplate="trial %{customdata}: %{y:.4f}<extra></extra>"))
    fig.update_layout(height=380, xaxis_title="config (its first trial)", yaxis_title="val accuracy")
    return fig
