"""Accuracy against cost: Pareto fronts of validation accuracy against model size and latency.

Every COMPLETE trial records its parameter count (``n_params``), its latency for one image
(``latency_ms_batch1``) and its throughput (``images_per_s_batch1024``, see
:mod:`mnist_sweep.model.latency`). A trial is on the front of a cost when no other trial is at least
as accurate on validation at a lower cost, or more accurate at the same cost. The report draws
both fronts; ``final --max-params`` / ``--max-latency-ms`` choose among the trials within a budget.

Example:
    >>> [(t.number, t.user_attrs["n_params"]) for t in pareto_front(study.trials, "n_params")]
    [(7, 50890), (3, 203530), (12, 1863690)]
    >>> best_within(study.trials, max_params=300_000).number
    3
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from mnist_sweep.results.tables import trial_score

#: The costs a trial records, with their axis titles in the report.
COSTS: dict[str, str] = {
    "n_params": "parameters (log)",
    "latency_ms_batch1": "ms per image at batch 1 (log)",
    "seconds_per_epoch": "seconds per epoch (median)",
}
FRONT_COSTS = ("n_params", "latency_ms_batch1")
_COMPLETE = {"color": "#1f77b4", "symbol": "circle", "size": 8, "opacity": 0.6}
_PRUNED = {"color": "#ff7f0e", "symbol": "x", "size": 7, "opacity": 0.6}
_FRONT = "#d62728"


def pareto_front(trials: Sequence[FrozenTrial], cost: str) -> list[FrozenTrial]:
    """The COMPLETE trials that no other beats on both validation accuracy (higher) and ``cost``
    (lower, a user attribute such as ``n_params``), cheapest first."""
    usable = sorted(((t.user_attrs[cost], -trial_score(t), t.number, t) for t in trials
                     if t.state == TrialState.COMPLETE and trial_score(t) is not None
                     and t.user_attrs.get(cost) is not None), key=lambda row: row[:3])
    front: list[FrozenTrial] = []
    best = float("-inf")
    for _, negative_score, _, trial in usable:
        if -negative_score > best:
            front.append(trial)
            best = -negative_score
    return front


def within_budget(trials: Sequence[FrozenTrial], max_params: int | None = None,
                  max_latency_ms: float | None = None) -> list[FrozenTrial]:
    """The COMPLETE trials whose recorded costs are within the budget, most accurate first; a trial
    that did not record a cost under a budget is left out."""
    def fits(trial: FrozenTrial) -> bool:
        attrs = trial.user_attrs
        if max_params is not None and (attrs.get("n_params") is None or attrs["n_params"] > max_params):
            return False
        return max_latency_ms is None or (attrs.get("latency_ms_batch1") is not None
                                          and attrs["latency_ms_batch1"] <= max_latency_ms)

    chosen = [t for t in trials if t.state == TrialState.COMPLETE and trial_score(t) is not None and fits(t)]
    return sorted(chosen, key=lambda t: (-trial_score(t), t.number))


def best_within(trials: Sequence[FrozenTrial], max_params: int | None = None,
                max_latency_ms: float | None = None) -> FrozenTrial | None:
    """The most accurate COMPLETE trial on validation within the budget, or None."""
    chosen = within_budget(trials, max_params, max_latency_ms)
    return chosen[0] if chosen else None


def cost_figure(trials: Sequence[FrozenTrial]) -> go.Figure | str:
    """Validation accuracy against each cost in :data:`COSTS`, the Pareto front drawn on the first two."""
    scored = [(t, s) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
              and (s := trial_score(t)) is not None]
    if not any(t.user_attrs.get("n_params") is not None for t, _ in scored):
        return "No trial recorded its parameter count."
    fig = make_subplots(rows=1, cols=len(COSTS), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[title.replace(" (log)", "") for title in COSTS.values()])
    for col, cost in enumerate(COSTS, start=1):
        for state, style in ((TrialState.COMPLETE, _COMPLETE), (TrialState.PRUNED, _PRUNED)):
            group = [(t, s) for t, s in scored if t.state == state and t.user_attrs.get(cost) is not None]
            if group:
                label = "COMPLETE" if state == TrialState.COMPLETE else "PRUNED (best epoch)"
                fig.add_trace(_scatter(group, cost, label, {"marker": style, "mode": "markers",
                                                            "showlegend": col == 1, "legendgroup": state.name}),
                              row=1, col=col)
        front = pareto_front(trials, cost) if cost in FRONT_COSTS else []
        if front:
            fig.add_trace(_scatter([(t, trial_score(t)) for t in front], cost, "Pareto front", {
                "mode": "lines+markers", "line": {"shape": "hv", "color": _FRONT},
                "marker": {"color": _FRONT, "size": 9, "symbol": "diamond"}, "showlegend": col == 1,
                "legendgroup": "front"}), row=1, col=col)
        fig.update_xaxes(type="log" if "(log)" in COSTS[cost] else "linear", title_text=COSTS[cost], row=1, col=col)
    fig.update_yaxes(title_text="val accuracy", row=1, col=1)
    fig.update_layout(height=420)
    return fig


def _scatter(points: list[tuple[FrozenTrial, float]], cost: str, name: str, style: dict[str, Any]) -> go.Scatter:
    return go.Scatter(
        x=[t.user_attrs[cost] for t, _ in points], y=[s for _, s in points], name=name,
        customdata=[t.number for t, _ in points],
        hovertemplate=f"trial %{{customdata}}<br>{cost}=%{{x}}<br>val_accuracy=%{{y:.4f}}<extra>{name}</extra>",
        **style)
