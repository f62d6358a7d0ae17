"""The study report: one self-contained HTML file with plotly figures and a sortable trials table.

The file embeds plotly.js (no CDN, no other file), so it opens offline and can be mailed or
archived next to the study. It holds a summary (counts by state, the best config and its
validation accuracy, the final model's test accuracy once ``train`` has written its metrics,
the study's provenance), then the figures of :func:`mnist_sweep.results.figures.report_figures`, one
section each with a stable id, and ``trials``: every trial in a table that sorts on a header
click. The file is written atomically: an interrupted report leaves the previous one whole.

Example:
    >>> write_report(load_study("sqlite:///studies/mnist_sweep.db", "quick"))   # studies/quick/report.html
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
from optuna.trial import FrozenTrial
from plotly.offline import get_plotlyjs

from mnist_sweep._base.files import write_text_atomic
from mnist_sweep._base.paths import metrics_path as default_metrics_path
from mnist_sweep._base.paths import report_path as default_report_path
from mnist_sweep.errors import InputError
from mnist_sweep.results.figures import CAPTIONS, TITLES, fmt_value, note_of, report_figures, searched_axes
from mnist_sweep.results.tables import trials_frame
from mnist_sweep.search.confirmation import chosen_trial, config_groups
from mnist_sweep.search.study import DONE_STATES, count_states
from mnist_sweep.sweep.goals import accuracy_of

#: Section id -> heading, in page order.
SECTIONS: dict[str, str] = {"summary": "Summary", **TITLES, "trials": "All trials"}
FIGURE_SECTIONS = tuple(TITLES)
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
    for section, fig in report_figures(study).items():
        caption = f'<p class="caption">{html.escape(CAPTIONS[section])}</p>'
        body.append(_section(section, caption + _figure_html(section, fig)))
    body.append(_section("trials", _table_html(trials_frame(study), searched)))
    out = Path(path) if path is not None else default_report_path(study.study_name)
    return write_text_atomic(out, _page(study.study_name, body))


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


def _summary(study: optuna.Study, trials: Sequence[FrozenTrial], searched: list[str],
             test_metrics: dict[str, Any] | None, metrics_path: Path) -> str:
    counts = count_states(study)
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    parts = [f'<p class="counts">{len(trials)} trials: {html.escape(states)}.</p>']
    description = (study.user_attrs.get("sweep") or {}).get("description")
    if description:
        parts.append(f'<p class="description">{html.escape(str(description))}</p>')
    signature = study.user_attrs.get("data_signature")
    if signature:
        names = ", ".join(map(str, signature.get("class_names", [])))
        parts.append(f'<p class="data">Data: {signature.get("side")} x {signature.get("side")} images, '
                     f'{len(signature.get("class_names", []))} classes: {html.escape(names)}.</p>')
    best = chosen_trial(study)
    if best is None:
        parts.append('<p class="best">No COMPLETE trial yet: the best config is not known.</p>')
    else:
        parts.append(f'<p class="best">Best: trial {best.number}, validation accuracy '
                     f'<strong>{accuracy_of(best):.4f}</strong>{_confirmed_note(trials, best.number)}.</p>')
        rows = "".join(
            f'<tr class="{"searched" if k in searched else "fixed"}"><th>{html.escape(k)}</th>'
            f"<td>{html.escape(fmt_value(v))}</td></tr>" for k, v in best.params.items())
        parts.append(f'<table class="best-params"><caption>best config (searched axes in bold)</caption>'
                     f"{rows}</table>")
    if test_metrics is not None:
        acc = test_metrics.get("test_accuracy")
        shown = f"<strong>{acc:.4f}</strong>" if isinstance(acc, (int, float)) else "not recorded"
        extra = ", ".join(f"{html.escape(k)} {html.escape(fmt_value(v))}" for k, v in test_metrics.items()
                          if k != "test_accuracy" and isinstance(v, (int, float, str)) and not isinstance(v, bool))
        parts.append(f'<p class="test">Retrained model: test accuracy {shown}'
                     f"{' (' + extra + ')' if extra else ''}; from {html.escape(str(metrics_path))}.</p>")
    else:
        parts.append('<p class="test">No retrained model yet (<code>python -m mnist_sweep train</code> '
                     "reports the test accuracy).</p>")
    axes = ", ".join(searched) if searched else "none (every trial has the same config)"
    parts.append(f'<p class="searched">Searched axes: {html.escape(axes)}.</p>')
    parts.append(_provenance_html(study.user_attrs.get("provenance")))
    return _section("summary", "".join(parts))


def _confirmed_note(trials: Sequence[FrozenTrial], number: int) -> str:
    group = next((g for g in config_groups(trials) if g.trial == number and g.runs > 1), None)
    return "" if group is None else f"; mean of its {group.runs} runs (other seeds) {group.mean:.4f} ± {group.std:.4f}"


def _provenance_html(provenance: Any) -> str:
    """The study's provenance as a compact table (``mnist_sweep._base.provenance``)."""
    if not isinstance(provenance, dict):
        return '<p class="provenance">No provenance recorded (a study made before mnist_sweep kept it).</p>'
    data, code, machine = (provenance.get(k) or {} for k in ("data", "code", "machine"))
    versions = provenance.get("versions") or {}
    commit = code.get("git_commit")
    git = f", git {commit[:10]}{' (modified)' if code.get('git_dirty') else ''}" if commit else ""
    rows = {
        "backend": provenance.get("backend"),
        "data": f"{data.get('source')} ({data.get('train_images')} train, {data.get('validation_images')} "
                f"validation, {data.get('test_images')} test images), sha256 {str(data.get('sha256'))[:16]}…",
        "code": f"mnist-sweep {code.get('version')}{git}",
        "libraries": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "machine": f"{machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('os')}",
    }
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f'<table class="provenance"><caption>provenance</caption>{cells}</table>'



# ---------------------------------------------------------------------------------------------
# HTML


def _section(section: str, inner: str) -> str:
    return f'<section id="{section}"><h2>{html.escape(SECTIONS[section])}</h2>{inner}</section>\n'


def _figure_html(section: str, content: go.Figure) -> str:
    note = note_of(content)
    if note is not None:
        return f'<p class="note">{html.escape(note)}</p>'
    if content.layout.title.text == TITLES[section]:  # the section's heading says it
        content.update_layout(title=None)
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
        return fmt_value(float(value) if isinstance(value, float) else value), repr(float(value))
    if value is pd.NaT:  # a WAITING trial has not started
        return "", ""
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
table.best-params caption,table.provenance caption{text-align:left;color:#555;white-space:nowrap}
table.provenance{margin-top:8px}table.provenance th,table.provenance td{text-align:left;white-space:normal}
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
