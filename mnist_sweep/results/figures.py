"""The report's figures as plotly objects: draw them in a notebook, or let the report embed them.

:func:`report_figures` returns one figure per section of the report, in page order:

- ``axes``: validation accuracy against each searched axis (scatter, or box + points per choice);
- ``parallel``: parallel coordinates from config to accuracy;
- ``history``: optimisation history with the best-so-far line;
- ``anytime``: the best validation accuracy against wall time (what a stop at any moment leaves);
- ``importance``: parameter importances;
- ``curves``: accuracy and loss per epoch, train and validation, of the best trials;
- ``cost``: accuracy against parameter count, latency and seconds per epoch, with Pareto fronts;
- ``confirm``: the re-runs of winner confirmation, each config's mean and spread.

A figure that cannot be drawn (too few trials, nothing varies) is an empty figure whose text
says why (``fig.layout.meta["note"]``). Only axes whose value varies count as searched; PRUNED
trials are drawn at their best reported epoch, with another marker than COMPLETE ones. The
validation-accuracy axes of ``axes`` and ``history`` span the good trials (:func:`accuracy_range`),
not the worst pruned one: a trial below is drawn on the bottom edge as a triangle pointing down
(:data:`CLIPPED_SYMBOL`), its value on hover.

Example:
    >>> figures = report_figures(study)
    >>> figures["history"].show()
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from mnist_sweep.results.accuracy_axis import (
    CLIPPED_NAME,
    STATE_STYLE,
    accuracy_range,
    clipped_trace,
    scored_points,
    split_clipped,
    state_label,
    state_marker,
)
from mnist_sweep.results.anytime import best_so_far, curve_origin, first_reach
from mnist_sweep.results.curves import PALETTE, confirmation_figure, curves_figure
from mnist_sweep.results.ladder import ladder_figure
from mnist_sweep.results.tradeoffs import cost_figure
from mnist_sweep.sweep.goals import accuracy_of, is_multi_objective

#: Figure key -> heading, in page order.
TITLES: dict[str, str] = {
    "axes": "Validation accuracy against each searched axis",
    "parallel": "Parallel coordinates: config to validation accuracy",
    "history": "Optimisation history",
    "anytime": "Best validation accuracy against wall time",
    "importance": "Parameter importances",
    "curves": "Learning curves of the best trials",
    "cost": "Accuracy against size and speed: Pareto fronts",
    "confirm": "Winner confirmation: the best configs with other seeds",
    "ladder": "The accuracy ladder: this study among published MNIST results",
}
CAPTIONS = {
    "axes": "One point per trial: blue dots COMPLETE, orange crosses PRUNED at their best epoch; "
            "boxes show the spread of COMPLETE trials per choice. Only axes that vary are shown. The "
            "vertical axis spans the good trials: a trial below it is a triangle on the bottom edge "
            "(its value on hover).",
    "parallel": "COMPLETE trials, one line each, coloured by validation accuracy; drag along an axis to filter.",
    "history": "Validation accuracy by trial number, the best so far as a line; PRUNED trials at their best epoch. "
               "The vertical axis spans the good trials: a trial below it is a triangle on the bottom edge "
               "(its value on hover).",
    "anytime": "The best validation accuracy the study had reached at each moment since its first trial started, "
               "epoch by epoch, over all workers: what stopping the sweep then would have left. A resumed "
               "study's pauses count as time.",
    "importance": "How much each searched axis explains the validation accuracy of COMPLETE trials "
                  "(Optuna's default importance evaluator); the fewer the trials, the rougher the ranking.",
    "curves": "Per-epoch accuracy and loss of the best trials: solid lines validation, dotted lines train.",
    "confirm": "Each re-run config's runs with other seeds (blue) and their mean ± standard deviation (red), in the "
               "order export and final rank them: one validation split cannot separate configs closer than this.",
    "cost": "Validation accuracy against the model's parameter count, its latency for one image on this machine "
            "and its median seconds per epoch; the red steps are the Pareto fronts (no trial is both more accurate "
            "and cheaper). `final --max-params N` / `--max-latency-ms MS` builds the best model within a budget.",
    "ladder": "Published MNIST results (hover: the source, and the training compute where it can be estimated) "
              "and this study: its best validation accuracy, its compute estimated from its trials' params, and "
              "the final model's test accuracy once `final` has run. Validation is not test: compare with care.",
}
ANYTIME_THRESHOLDS = (0.95, 0.98, 0.985, 0.99)

def searched_axes(trials: Sequence[FrozenTrial]) -> list[str]:
    """Params that take more than one value across ``trials``, in the sweep's axis order.

    Fixed axes are recorded too (one-choice categoricals); they are not "searched".
    """
    order: dict[str, None] = {}
    for t in trials:
        order.update(dict.fromkeys(t.params))
    return [p for p in order if len({repr(t.params[p]) for t in trials if p in t.params}) > 1]


def report_figures(study: optuna.Study) -> dict[str, go.Figure]:
    """Every figure of the report for ``study``, keyed as :data:`TITLES` (page order).

    Example:
        >>> for key, fig in report_figures(study).items():
        ...     fig.show()
    """
    trials = study.get_trials(deepcopy=False)
    searched = searched_axes(trials)
    y_range = accuracy_range(trials)
    drawn = {
        "axes": _axes_figure(trials, searched, y_range),
        "parallel": _parallel_figure(study, trials, searched),
        "history": _history_figure(study, trials, y_range),
        "anytime": _anytime_figure(trials),
        "importance": _importance_figure(study, trials),
        "curves": curves_figure(trials),
        "cost": cost_figure(trials),
        "confirm": confirmation_figure(trials),
        "ladder": ladder_figure(trials, study.user_attrs),
    }
    return {key: _titled(key, content) for key, content in drawn.items()}


def _target(study: optuna.Study) -> Any:
    """Optuna's plots take one objective: a multi-objective study's first, validation accuracy."""
    return accuracy_of if is_multi_objective(study) else None


def _titled(key: str, content: go.Figure | str) -> go.Figure:
    if isinstance(content, str):
        fig = go.Figure()
        fig.add_annotation(text=content, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
        fig.update_layout(meta={"note": content}, height=160, xaxis={"visible": False}, yaxis={"visible": False})
        content = fig
    content.update_layout(template="plotly_white")
    if not (content.layout.title and content.layout.title.text):
        content.update_layout(title={"text": TITLES[key], "font": {"size": 14}, "x": 0.01})
    return content


def note_of(fig: go.Figure) -> str | None:
    """The reason a figure from :func:`report_figures` is empty, or None for a drawn one."""
    meta = fig.layout.meta
    return meta.get("note") if isinstance(meta, dict) else None


def fmt_value(value: Any) -> str:
    """A number as the report shows it: 4 decimals, or 4 significant digits when tiny or huge."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def _axes_figure(trials: Sequence[FrozenTrial], searched: list[str],
                 y_range: tuple[float, float] | None = None) -> go.Figure | str:
    points = scored_points(trials)
    if not searched:
        return "No axis varies across the trials: nothing to plot against."
    cols = min(3, len(searched))
    rows = math.ceil(len(searched) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=searched, vertical_spacing=0.3 / rows,
                        horizontal_spacing=0.06)
    legend_shown: set[Any] = set()
    for i, name in enumerate(searched):
        row, col = i // cols + 1, i % cols + 1
        dist = next(t.distributions[name] for t in trials if name in t.distributions)
        mine = [(t, s) for t, s in points if name in t.params]
        if isinstance(dist, CategoricalDistribution):
            positions = {repr(c): j for j, c in enumerate(dist.choices)}
            complete = [(positions[repr(t.params[name])], s) for t, s in mine if t.state == TrialState.COMPLETE]
            if complete:
                fig.add_trace(go.Box(x=[p for p, _ in complete], y=[s for _, s in complete], boxpoints=False,
                                     width=0.5, line={"color": "#9bbad6"}, fillcolor="rgba(31,119,180,0.08)",
                                     hoverinfo="skip", showlegend=False), row=row, col=col)
            fig.update_xaxes(tickvals=list(range(len(dist.choices))), ticktext=[str(c) for c in dist.choices],
                             range=[-0.6, len(dist.choices) - 0.4], row=row, col=col)
        else:
            positions = None
            if getattr(dist, "log", False):
                fig.update_xaxes(type="log", row=row, col=col)
            elif isinstance(dist, IntDistribution) and (dist.high - dist.low) / dist.step <= 12:
                fig.update_xaxes(dtick=dist.step, row=row, col=col)
        drawn, clipped = split_clipped([(t, s) for t, s in mine if t.state in STATE_STYLE], y_range)
        for state in STATE_STYLE:
            group = [(t, s) for t, s in drawn if t.state == state]
            if not group:
                continue
            fig.add_trace(go.Scatter(
                x=[_axis_x(t, name, positions) for t, _ in group], y=[s for _, s in group], mode="markers",
                marker=state_marker(state), name=state_label(state), legendgroup=state.name,
                showlegend=state not in legend_shown,
                customdata=[[t.number, fmt_value(t.params[name])] for t, _ in group],
                hovertemplate=f"trial %{{customdata[0]}}<br>{name}=%{{customdata[1]}}<br>"
                              "val_accuracy=%{y:.4f}<extra>" + state.name + "</extra>"),
                row=row, col=col)
            legend_shown.add(state)
        if clipped and y_range is not None:
            fig.add_trace(clipped_trace([_axis_x(t, name, positions) for t, _ in clipped], clipped, y_range,
                                         [f"{name}={fmt_value(t.params[name])}<br>" for t, _ in clipped],
                                         CLIPPED_NAME not in legend_shown), row=row, col=col)
            legend_shown.add(CLIPPED_NAME)
        if col == 1:
            fig.update_yaxes(title_text="val accuracy", row=row, col=col)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    fig.update_layout(height=320 * rows + 80, margin={"t": 80},
                      legend={"orientation": "h", "yref": "container", "y": 1, "yanchor": "top", "x": 0})
    return fig


def _axis_x(trial: FrozenTrial, name: str, positions: dict[str, int] | None) -> Any:
    """The x of a trial on an axis's panel: its value, or its choice's position with a little jitter."""
    if positions is None:
        return trial.params[name]
    return positions[repr(trial.params[name])] + ((trial.number * 0.618) % 1 - 0.5) * 0.3


def _parallel_figure(study: optuna.Study, trials: Sequence[FrozenTrial], searched: list[str]) -> go.Figure | str:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    params = [p for p in searched if all(p in t.params for t in complete)]
    if not complete or not params:
        return "Needs COMPLETE trials that differ in at least one axis."
    fig = optuna.visualization.plot_parallel_coordinate(study, params=params, target=_target(study),
                                                        target_name="val accuracy")
    fig.update_layout(title=None, height=460)
    return fig


def _history_figure(study: optuna.Study, trials: Sequence[FrozenTrial],
                    y_range: tuple[float, float] | None = None) -> go.Figure | str:
    clipped: list[tuple[FrozenTrial, float]] = []
    if any(t.state == TrialState.COMPLETE for t in trials):
        fig = optuna.visualization.plot_optimization_history(study, target=_target(study), target_name="val accuracy")
        dots = next((d for d in fig.data if d.mode == "markers" and d.name == "val accuracy"), None)
        if y_range is not None and dots is not None:  # Optuna's COMPLETE points below the range: drawn clipped
            by_number = {t.number: t for t in trials}
            kept = [(x, y) for x, y in zip(dots.x, dots.y, strict=True) if y >= y_range[0]]
            clipped += [(by_number[x], y) for x, y in zip(dots.x, dots.y, strict=True) if y < y_range[0]]
            dots.update(x=[x for x, _ in kept], y=[y for _, y in kept])
    else:
        fig = go.Figure()
        fig.update_layout(xaxis_title="Trial", yaxis_title="val accuracy")
    pruned, below = split_clipped([(t, s) for t, s in scored_points(trials) if t.state == TrialState.PRUNED], y_range)
    if pruned:
        fig.add_trace(go.Scatter(x=[t.number for t, _ in pruned], y=[s for _, s in pruned], mode="markers",
                                 marker=state_marker(TrialState.PRUNED), name=state_label(TrialState.PRUNED),
                                 hovertemplate="trial %{x}<br>best epoch %{y:.4f}<extra>PRUNED</extra>"))
    clipped += below
    if clipped and y_range is not None:
        fig.add_trace(clipped_trace([t.number for t, _ in clipped], clipped, y_range, [""] * len(clipped), True))
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    fig.update_layout(title=None, height=420)
    return fig


def _anytime_figure(trials: Sequence[FrozenTrial]) -> go.Figure | str:
    origin = curve_origin(trials)
    curve = best_so_far(trials, origin)
    if origin is None or not curve:
        return "No trial recorded its epochs' seconds, so none can be placed in time."
    last = max((t.datetime_complete for t in trials if t.datetime_complete is not None), default=origin)
    end = max(curve[-1].seconds, (last - origin).total_seconds())  # the line runs on to the study's last trial
    xs = [p.seconds / 60 for p in curve] + [end / 60]
    ys = [p.value for p in curve] + [curve[-1].value]
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="lines+markers", line={"shape": "hv", "color": PALETTE[0]},
        marker={"size": [7] * len(curve) + [0]}, name="best so far",
        customdata=[[p.trial, p.epoch] for p in curve] + [[curve[-1].trial, curve[-1].epoch]],
        hovertemplate="%{x:.1f} min: %{y:.4f}<br>trial %{customdata[0]}, epoch %{customdata[1]}<extra></extra>"))
    reached = [f"{threshold:.3f} after {seconds:.0f} s" for threshold in ANYTIME_THRESHOLDS
               if (seconds := first_reach(curve, threshold)) is not None]
    fig.update_layout(
        xaxis_title="minutes since the first trial started", yaxis_title="best val accuracy so far", height=400,
        title={"text": "reached " + ", ".join(reached) if reached else "", "font": {"size": 13}, "x": 0.01})
    return fig


def _importance_figure(study: optuna.Study, trials: Sequence[FrozenTrial]) -> go.Figure | str:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    params = [p for p in searched_axes(complete) if all(p in t.params for t in complete)]
    if len(complete) < 2 or not params:
        return (f"Importances need at least 2 COMPLETE trials differing in at least one axis; this study has "
                f"{len(complete)} COMPLETE trial(s) and {len(params)} axis(es) varying among them.")
    try:
        # Optuna's importance evaluator ranks low targets best when given one: hand it -accuracy
        target = None if _target(study) is None else (lambda t: -accuracy_of(t))
        with warnings.catch_warnings():  # it warns of that whenever it is given a target
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
            fig = optuna.visualization.plot_param_importances(study, params=params, target=target,
                                                              target_name="val accuracy")
    except Exception as err:  # noqa: BLE001 - an estimate that cannot be made is a note, not a failed report
        return f"Parameter importances could not be estimated: {err}"
    fig.update_layout(height=max(260, 60 + 40 * len(params)), title={
        "text": f"from {len(complete)} COMPLETE trial{'s' if len(complete) != 1 else ''}", "font": {"size": 13},
        "x": 0.01})
    return fig


