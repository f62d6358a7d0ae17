"""The study report: one self-contained HTML file with plotly figures and a sortable trials table.

The file embeds plotly.js (no CDN, no other file), so it opens offline and can be mailed or
archived next to the study. It holds a summary (counts by state, the best config and its
validation accuracy, and the test accuracy of the retrained model when ``train`` has written
its metrics), then one section per figure, each with a stable id:

- ``axes``: validation accuracy against each searched axis (scatter, or box + points per choice);
- ``parallel``: parallel coordinates from config to accuracy;
- ``history``: optimisation history with the best-so-far line;
- ``anytime``: the best validation accuracy against wall time (what a stop at any moment leaves);
- ``importance``: parameter importances (a note instead when they cannot be estimated);
- ``curves``: accuracy and loss per epoch, train and validation, of the best trials;
- ``cost``: accuracy against parameter count and seconds per epoch;
- ``trials``: every trial in a table that sorts on a header click.

Only axes whose value actually varies across the trials count as searched. PRUNED trials are
drawn with their best reported epoch and a different marker from COMPLETE ones.

Example:
    >>> study = load_existing("sqlite:///studies/mnist_sweep.db", "quick")
    >>> write_report(study)          # studies/quick/report.html
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from mnist_sweep.anytime import best_so_far, curve_origin, first_reach
from mnist_sweep.errors import InputError
from mnist_sweep.study import DONE_STATES, count_states, load_existing
from mnist_sweep.tables import trial_score, trials_frame

#: Section id -> heading, in page order.
SECTIONS: dict[str, str] = {
    "summary": "Summary",
    "axes": "Validation accuracy against each searched axis",
    "parallel": "Parallel coordinates: config to validation accuracy",
    "history": "Optimisation history",
    "anytime": "Best validation accuracy against wall time",
    "importance": "Parameter importances",
    "curves": "Learning curves of the best trials",
    "cost": "Accuracy against model size and epoch time",
    "trials": "All trials",
}
FIGURE_SECTIONS = ("axes", "parallel", "history", "anytime", "importance", "curves", "cost")
_CAPTIONS = {
    "axes": "One point per trial: blue dots COMPLETE, orange crosses PRUNED at their best epoch; "
            "boxes show the spread of COMPLETE trials per choice. Only axes that vary are shown.",
    "parallel": "COMPLETE trials, one line each, coloured by validation accuracy; drag along an axis to filter.",
    "history": "Validation accuracy by trial number, the best so far as a line; PRUNED trials at their best epoch.",
    "anytime": "The best validation accuracy the study had reached at each moment since its first trial started, "
               "epoch by epoch, over all workers: what stopping the sweep then would have left. A resumed "
               "study's pauses count as time.",
    "importance": "How much each searched axis explains the validation accuracy of COMPLETE trials "
                  "(Optuna's default importance evaluator).",
    "curves": "Per-epoch accuracy and loss of the best trials: solid lines validation, dotted lines train.",
    "cost": "Validation accuracy against the model's parameter count and its median seconds per epoch.",
}
CURVE_TRIALS = 5
ANYTIME_THRESHOLDS = (0.95, 0.98, 0.985, 0.99)

_STYLE = {
    TrialState.COMPLETE: {"color": "#1f77b4", "symbol": "circle", "size": 8, "opacity": 0.85},
    TrialState.PRUNED: {"color": "#ff7f0e", "symbol": "x", "size": 8, "opacity": 0.85},
    TrialState.FAIL: {"color": "#d62728", "symbol": "diamond-open", "size": 9, "opacity": 0.9},
}
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def default_report_path(study_name: str) -> Path:
    """``studies/<study>/report.html``, next to the other per-study outputs."""
    return Path("studies") / study_name / "report.html"


def default_metrics_path(study_name: str) -> Path:
    """``studies/<study>/metrics.json``, where ``train`` writes the retrained model's test metrics."""
    return Path("studies") / study_name / "metrics.json"


def searched_axes(trials: Sequence[FrozenTrial]) -> list[str]:
    """Params that take more than one value across ``trials``, in the sweep's axis order.

    Fixed axes are recorded too (one-choice categoricals); they are not "searched".
    """
    order: dict[str, None] = {}
    for t in trials:
        order.update(dict.fromkeys(t.params))
    return [p for p in order if len({repr(t.params[p]) for t in trials if p in t.params}) > 1]


def report_for(storage_url: str, study_name: str | None = None, path: str | Path | None = None,
               metrics: str | Path | None = None) -> Path:
    """Load a study from its storage (see :func:`mnist_sweep.study.load_existing`) and write its report.

    Example:
        >>> report_for("sqlite:///studies/mnist_sweep.db", "quick", "/tmp/quick.html")
    """
    return write_report(load_existing(storage_url, study_name), path, metrics)


def write_report(study: optuna.Study, path: str | Path | None = None, metrics: str | Path | None = None) -> Path:
    """Write the report of ``study`` to ``path`` (default :func:`default_report_path`) and return the path.

    Args:
        study: a loaded study.
        path: the HTML file to write; its folder is created.
        metrics: a metrics JSON written by ``train`` (its ``test_accuracy`` is shown); default
            :func:`default_metrics_path` when that file exists.

    Raises:
        InputError: the study has no finished (COMPLETE or PRUNED) trial, or ``metrics`` is missing
            or not a JSON object.
    """
    trials = study.get_trials(deepcopy=False)
    _check_reportable(study.study_name, trials)
    metrics_path = Path(metrics) if metrics is not None else default_metrics_path(study.study_name)
    test_metrics = _read_metrics(metrics_path) if metrics is not None or metrics_path.is_file() else None
    searched = searched_axes(trials)
    body = [_summary(study, trials, searched, test_metrics, metrics_path)]
    figures = {
        "axes": _axes_figure(trials, searched),
        "parallel": _parallel_figure(study, trials, searched),
        "history": _history_figure(study, trials),
        "anytime": _anytime_figure(trials),
        "importance": _importance_figure(study, trials),
        "curves": _curves_figure(trials),
        "cost": _cost_figure(trials),
    }
    for section, content in figures.items():
        caption = f'<p class="caption">{html.escape(_CAPTIONS[section])}</p>'
        body.append(_section(section, caption + _figure_html(section, content)))
    body.append(_section("trials", _table_html(trials_frame(study), searched)))
    out = Path(path) if path is not None else default_report_path(study.study_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(study.study_name, body), encoding="utf-8")
    return out


def _check_reportable(name: str, trials: Sequence[FrozenTrial]) -> None:
    if not trials:
        raise InputError(f"study '{name}' has no trials yet: nothing to report (run it first)")
    if not any(t.state in DONE_STATES for t in trials):
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(_state_counts(trials).items()))
        raise InputError(f"study '{name}' has no finished trial ({states}): nothing to report")


def _state_counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such metrics file") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable metrics JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a metrics file must hold a JSON object")
    return data


# ---------------------------------------------------------------------------------------------
# Summary


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def _summary(study: optuna.Study, trials: Sequence[FrozenTrial], searched: list[str],
             test_metrics: dict[str, Any] | None, metrics_path: Path) -> str:
    counts = count_states(study)
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    parts = [f'<p class="counts">{len(trials)} trials: {html.escape(states)}.</p>']
    description = (study.user_attrs.get("sweep") or {}).get("description")
    if description:
        parts.append(f'<p class="description">{html.escape(str(description))}</p>')
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is None:
        parts.append('<p class="best">No COMPLETE trial yet: the best config is not known.</p>')
    else:
        parts.append(f'<p class="best">Best: trial {best.number}, validation accuracy '
                     f'<strong>{best.value:.4f}</strong>.</p>')
        rows = "".join(
            f'<tr class="{"searched" if k in searched else "fixed"}"><th>{html.escape(k)}</th>'
            f"<td>{html.escape(_fmt(v))}</td></tr>" for k, v in best.params.items())
        parts.append(f'<table class="best-params"><caption>best config (searched axes in bold)</caption>'
                     f"{rows}</table>")
    if test_metrics is not None:
        acc = test_metrics.get("test_accuracy")
        shown = f"<strong>{acc:.4f}</strong>" if isinstance(acc, (int, float)) else "not recorded"
        extra = ", ".join(f"{html.escape(k)} {html.escape(_fmt(v))}" for k, v in test_metrics.items()
                          if k != "test_accuracy" and isinstance(v, (int, float, str)) and not isinstance(v, bool))
        parts.append(f'<p class="test">Retrained model: test accuracy {shown}'
                     f"{' (' + extra + ')' if extra else ''}; from {html.escape(str(metrics_path))}.</p>")
    else:
        parts.append('<p class="test">No retrained model yet (<code>python -m mnist_sweep train</code> '
                     "reports the test accuracy).</p>")
    axes = ", ".join(searched) if searched else "none (every trial has the same config)"
    parts.append(f'<p class="searched">Searched axes: {html.escape(axes)}.</p>')
    return _section("summary", "".join(parts))


# ---------------------------------------------------------------------------------------------
# Figures (each returns a figure, or a note saying why there is none)


def _points(trials: Sequence[FrozenTrial]) -> list[tuple[FrozenTrial, float]]:
    return [(t, s) for t in trials if (s := trial_score(t)) is not None]


def _marker(state: TrialState) -> dict[str, Any]:
    style = _STYLE[state]
    return {"color": style["color"], "symbol": style["symbol"], "size": style["size"], "opacity": style["opacity"]}


def _label(state: TrialState) -> str:
    return "COMPLETE" if state == TrialState.COMPLETE else f"{state.name} (best epoch)"


def _axes_figure(trials: Sequence[FrozenTrial], searched: list[str]) -> go.Figure | str:
    points = _points(trials)
    if not searched:
        return "No axis varies across the trials: nothing to plot against."
    cols = min(3, len(searched))
    rows = math.ceil(len(searched) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=searched, vertical_spacing=0.3 / rows,
                        horizontal_spacing=0.06)
    legend_shown: set[TrialState] = set()
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
        for state in _STYLE:
            group = [(t, s) for t, s in mine if t.state == state]
            if not group:
                continue
            fig.add_trace(go.Scatter(
                x=[_axis_x(t, name, positions) for t, _ in group], y=[s for _, s in group], mode="markers",
                marker=_marker(state), name=_label(state), legendgroup=state.name, showlegend=state not in legend_shown,
                customdata=[[t.number, _fmt(t.params[name])] for t, _ in group],
                hovertemplate=f"trial %{{customdata[0]}}<br>{name}=%{{customdata[1]}}<br>"
                              "val_accuracy=%{y:.4f}<extra>" + state.name + "</extra>"),
                row=row, col=col)
            legend_shown.add(state)
        if col == 1:
            fig.update_yaxes(title_text="val accuracy", row=row, col=col)
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
    fig = optuna.visualization.plot_parallel_coordinate(study, params=params, target_name="val accuracy")
    fig.update_layout(title=None, height=460)
    return fig


def _history_figure(study: optuna.Study, trials: Sequence[FrozenTrial]) -> go.Figure | str:
    if any(t.state == TrialState.COMPLETE for t in trials):
        fig = optuna.visualization.plot_optimization_history(study, target_name="val accuracy")
    else:
        fig = go.Figure()
        fig.update_layout(xaxis_title="Trial", yaxis_title="val accuracy")
    pruned = [(t, s) for t, s in _points(trials) if t.state == TrialState.PRUNED]
    if pruned:
        fig.add_trace(go.Scatter(x=[t.number for t, _ in pruned], y=[s for _, s in pruned], mode="markers",
                                 marker=_marker(TrialState.PRUNED), name=_label(TrialState.PRUNED),
                                 hovertemplate="trial %{x}<br>best epoch %{y:.4f}<extra>PRUNED</extra>"))
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
        x=xs, y=ys, mode="lines+markers", line={"shape": "hv", "color": _PALETTE[0]},
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
        fig = optuna.visualization.plot_param_importances(study, params=params, target_name="val accuracy")
    except Exception as err:  # noqa: BLE001 - an estimate that cannot be made is a note, not a failed report
        return f"Parameter importances could not be estimated: {err}"
    fig.update_layout(title=None, height=max(260, 60 + 40 * len(params)))
    return fig


def _finite(values: Sequence[Any]) -> list[float | None]:
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]


def _curves_figure(trials: Sequence[FrozenTrial]) -> go.Figure | str:
    ranked = sorted(((t, s) for t, s in _points(trials) if t.user_attrs.get("history")),
                    key=lambda ts: (-ts[1], ts[0].number))[:CURVE_TRIALS]
    if not ranked:
        return "No trial recorded per-epoch metrics."
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"), horizontal_spacing=0.08)
    for i, (trial, score) in enumerate(ranked):
        history, color = trial.user_attrs["history"], _PALETTE[i % len(_PALETTE)]
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


def _cost_figure(trials: Sequence[FrozenTrial]) -> go.Figure | str:
    points = [(t, s) for t, s in _points(trials) if t.user_attrs.get("n_params") is not None]
    if not points:
        return "No trial recorded its parameter count."
    fig = make_subplots(rows=1, cols=2, subplot_titles=("parameters", "seconds per epoch"),
                        shared_yaxes=True, horizontal_spacing=0.06)
    for state in _STYLE:
        group = [(t, s) for t, s in points if t.state == state]
        for col, attr in ((1, "n_params"), (2, "seconds_per_epoch")):
            usable = [(t, s) for t, s in group if t.user_attrs.get(attr) is not None]
            if not usable:
                continue
            fig.add_trace(go.Scatter(
                x=[t.user_attrs[attr] for t, _ in usable], y=[s for _, s in usable], mode="markers",
                marker=_marker(state), name=_label(state), legendgroup=state.name, showlegend=col == 1,
                customdata=[t.number for t, _ in usable],
                hovertemplate=f"trial %{{customdata}}<br>{attr}=%{{x}}<br>val_accuracy=%{{y:.4f}}"
                              f"<extra>{state.name}</extra>"), row=1, col=col)
    fig.update_xaxes(type="log", title_text="parameters (log)", row=1, col=1)
    fig.update_xaxes(title_text="seconds per epoch (median)", row=1, col=2)
    fig.update_yaxes(title_text="val accuracy", row=1, col=1)
    fig.update_layout(height=420)
    return fig


# ---------------------------------------------------------------------------------------------
# HTML


def _section(section: str, inner: str) -> str:
    return f'<section id="{section}"><h2>{html.escape(SECTIONS[section])}</h2>{inner}</section>\n'


def _figure_html(section: str, content: go.Figure | str) -> str:
    if isinstance(content, str):
        return f'<p class="note">{html.escape(content)}</p>'
    content.update_layout(template="plotly_white")
    content.update_layout(margin={"l": 60, "r": 20, "t": content.layout.margin.t or 50, "b": 60})
    return pio.to_html(content, full_html=False, include_plotlyjs=False, div_id=f"plot-{section}",
                       config={"displaylogo": False, "responsive": True})


def _cell(value: Any) -> tuple[str, str]:
    """(shown text, sort key) of one table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "", ""
    if isinstance(value, bool):
        return str(value), str(value)
    if isinstance(value, (int, float)):
        return _fmt(float(value) if isinstance(value, float) else value), repr(float(value))
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.strftime("%Y-%m-%d %H:%M:%S"), value.isoformat()
    return str(value), str(value)


def _table_html(frame: pd.DataFrame, searched: list[str]) -> str:
    columns = {"number": "trial", "state": "state", "best_val_accuracy": "val_accuracy",
               **{f"params_{p}": p for p in searched},
               "epochs_run": "epochs run", "duration_s": "seconds", "seconds_per_epoch": "s/epoch",
               "n_params": "parameters", "datetime_start": "started", "fail_reason": "reason"}
    shown = frame[[c for c in columns if c in frame.columns]].copy()
    unexplained = (shown["state"] == "PRUNED") & shown["fail_reason"].isna()
    shown.loc[unexplained, "fail_reason"] = "pruned after epoch " + shown.loc[unexplained, "epochs_run"].astype(str)
    head = "".join(f'<th title="click to sort">{html.escape(columns[c])}</th>' for c in shown.columns)
    rows = []
    for record in shown.itertuples(index=False):
        cells = []
        for value in record:
            text, key = _cell(value)
            cells.append(f'<td data-sort="{html.escape(key)}">{html.escape(text)}</td>')
        rows.append(f'<tr class="state-{html.escape(str(record[1]))}">{"".join(cells)}</tr>')
    return (f'<p class="caption">{len(shown)} trials; val_accuracy of a PRUNED trial is its best epoch. '
            "Click a header to sort. <code>python -m mnist_sweep trials</code> exports every column as CSV.</p>"
            f'<div class="scroll"><table id="trials-table" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:0 24px;
color:#222}
h1{margin:20px 0 4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
nav a{margin-right:12px}.note,.caption{color:#555}code{background:#f4f4f4;padding:0 3px}
table{border-collapse:collapse;font-size:13px}td{white-space:nowrap}.scroll{overflow-x:auto}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}table.best-params th{text-align:left}
table.best-params caption{text-align:left;color:#555;white-space:nowrap}
tr.searched th,tr.searched td{font-weight:bold}#trials-table th{cursor:pointer;position:sticky;top:0}
#trials-table th.asc::after{content:" \\25B2"}#trials-table th.desc::after{content:" \\25BC"}
tr.state-PRUNED td{color:#b35900}tr.state-FAIL td{color:#b00}.best strong,.test strong{font-size:1.15em}
#js-errors{color:#b00;background:#fee;padding:8px}
"""

_ERRORS_JS = """
window.addEventListener("error", function (e) {
  var box = document.getElementById("js-errors");
  if (!box) { box = document.createElement("pre"); box.id = "js-errors";
    (document.body || document.documentElement).appendChild(box); }
  box.textContent += "JavaScript error: " + (e.message || e) + "\\n";
});
"""

_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        if (x === "" || y === "") { return x === y ? 0 : (x === "" ? 1 : -1); }
        var nx = parseFloat(x), ny = parseFloat(y);
        var r = (!isNaN(nx) && !isNaN(ny) && isFinite(x) && isFinite(y)) ? nx - ny : x.localeCompare(y);
        return asc ? r : -r;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _page(study_name: str, body: list[str]) -> str:
    title = f"mnist_sweep report: {study_name}"
    nav = " ".join(f'<a href="#{s}">{html.escape(SECTIONS[s].split(":")[0])}</a>' for s in SECTIONS)
    created = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script>{_ERRORS_JS}</script>\n<script>{get_plotlyjs()}</script></head>\n<body>"
        f'<h1>Study <span id="study-name">{html.escape(study_name)}</span></h1>'
        f'<p class="note">mnist_sweep report, written {created}.</p><nav>{nav}</nav>\n'
        + "".join(body) + f"<script>{_SORT_JS}</script></body></html>\n"
    )
