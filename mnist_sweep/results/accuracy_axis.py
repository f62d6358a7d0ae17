"""The validation-accuracy axis of the report's scatter figures: a range that spans the good trials
(:func:`accuracy_range`), and the trials below it drawn on the bottom edge as triangles pointing
down (:data:`CLIPPED_SYMBOL`), their true value on hover.

A default study's worst pruned trial sits near 0.35 while the choices are made between 0.98 and
0.995: an axis from the worst trial to 1 puts every good trial on one line at the top.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from mnist_sweep.results.tables import trial_score

STATE_STYLE = {
    TrialState.COMPLETE: {"color": "#1f77b4", "symbol": "circle", "size": 8, "opacity": 0.85},
    TrialState.PRUNED: {"color": "#ff7f0e", "symbol": "x", "size": 8, "opacity": 0.85},
    TrialState.FAIL: {"color": "#d62728", "symbol": "diamond-open", "size": 9, "opacity": 0.9},
}

#: The marker of a trial below a validation-accuracy axis's range, drawn on the bottom edge.
CLIPPED_SYMBOL = "triangle-down"

CLIPPED_NAME = "below the axis (value on hover)"

_MIN_RANGE_TRIALS = 3  # fewer COMPLETE trials than this: plotly's own range


def accuracy_range(trials: Sequence[FrozenTrial]) -> tuple[float, float] | None:
    """The y-range of the validation-accuracy axes (per-axis panels, history): where the choices are made.

    From the lowest COMPLETE trial that is not a low outlier (not below Tukey's fence, Q1 - 1.5 IQR
    of the COMPLETE trials' accuracies) to the highest point drawn, each with a margin of 8% of that
    span (at least 0.002). None (plotly's own range) with fewer than 3 COMPLETE trials, or when no
    drawn point falls below: then every point fits anyway.

    Example:
        >>> accuracy_range(study.trials)    # COMPLETE trials at 0.97-0.99, one pruned at 0.35
        (0.9684, 0.9916)
    """
    points = [s for t, s in scored_points(trials) if t.state in STATE_STYLE]
    complete = sorted(s for t, s in scored_points(trials) if t.state == TrialState.COMPLETE)
    if len(complete) < _MIN_RANGE_TRIALS:
        return None
    q1, _, q3 = statistics.quantiles(complete, n=4, method="inclusive")
    low = min(s for s in complete if s >= q1 - 1.5 * (q3 - q1))
    high = max(points)
    margin = max(0.08 * (high - low), 0.002)
    if min(points) >= low - margin:
        return None
    return low - margin, high + margin


def _clipped_y(floor: float, high: float) -> float:
    """Where a point below the range is drawn: just above the bottom edge, so the whole marker shows."""
    return floor + 0.02 * (high - floor)


def scored_points(trials: Sequence[FrozenTrial]) -> list[tuple[FrozenTrial, float]]:
    return [(t, s) for t in trials if (s := trial_score(t)) is not None]


def state_marker(state: TrialState) -> dict[str, Any]:
    style = STATE_STYLE[state]
    return {"color": style["color"], "symbol": style["symbol"], "size": style["size"], "opacity": style["opacity"]}


def state_label(state: TrialState) -> str:
    return "COMPLETE" if state == TrialState.COMPLETE else f"{state.name} (best epoch)"


def split_clipped(group: list[tuple[FrozenTrial, float]], y_range: tuple[float, float] | None
           ) -> tuple[list[tuple[FrozenTrial, float]], list[tuple[FrozenTrial, float]]]:
    """``group`` as (points within ``y_range``, points below it)."""
    if y_range is None:
        return group, []
    return [(t, s) for t, s in group if s >= y_range[0]], [(t, s) for t, s in group if s < y_range[0]]


def clipped_trace(xs: list[Any], clipped: list[tuple[FrozenTrial, float]], y_range: tuple[float, float],
                   detail: list[str], showlegend: bool) -> go.Scatter:
    """Points below ``y_range``: triangles on its bottom edge, in their state's colour, their value on hover."""
    return go.Scatter(
        x=xs, y=[_clipped_y(*y_range)] * len(clipped), mode="markers", name=CLIPPED_NAME, legendgroup="clipped",
        showlegend=showlegend, cliponaxis=False,
        marker={"symbol": CLIPPED_SYMBOL, "size": 10, "color": [STATE_STYLE[t.state]["color"] for t, _ in clipped]},
        customdata=[[t.number, s, t.state.name, d] for (t, s), d in zip(clipped, detail, strict=True)],
        hovertemplate="trial %{customdata[0]} %{customdata[2]}<br>%{customdata[3]}"
                      "val_accuracy=%{customdata[1]:.4f} (below the axis)<extra></extra>")
