"""One row per trial: the flat table behind the report's trials table and the ``trials`` command.

Optuna's own ``study.trials_dataframe()`` nests user attributes and leaves out what our
objective stores as lists; this table flattens them: params (``params_<axis>``), timing,
model size, the reason a trial stopped, and per-epoch validation accuracy
(``val_accuracy_e1`` … ``val_accuracy_eN``, from the trial's intermediate values) next to the
whole per-epoch ``history`` as one JSON column.

Example:
    >>> frame = trials_frame(study)
    >>> frame[["number", "state", "value", "params_units"]].head()
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from mnist_sweep._base.files import write_text_atomic

#: Columns every table has, in order; then ``params_*``, then ``val_accuracy_e*``, then ``history``.
BASE_COLUMNS = ["number", "state", "value", "best_val_accuracy", "datetime_start", "datetime_complete",
                "duration_s", "n_params", "seconds_per_epoch", "latency_ms_batch1", "images_per_s_batch1024",
                "epochs_run", "fail_reason"]


def trial_score(trial: FrozenTrial) -> float | None:
    """The trial's validation accuracy: its value when COMPLETE, else its best reported epoch (or None).

    Pruned trials have no value of their own worth comparing (Optuna stores the last epoch's); the
    best epoch is what a COMPLETE trial's value means too.
    """
    if trial.state == TrialState.COMPLETE and trial.values:
        return float(trial.values[0])  # validation accuracy, the first objective
    finite = [v for v in trial.intermediate_values.values() if v is not None and math.isfinite(v)]
    return max(finite) if finite else None


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial of ``study`` as one row (columns: see the module docstring), ordered by number."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for t in trials for name in t.params})
    max_epoch = max((max(t.intermediate_values) for t in trials if t.intermediate_values), default=0)
    rows = [_row(t, param_names, max_epoch) for t in trials]
    columns = (BASE_COLUMNS + [f"params_{p}" for p in param_names]
               + [f"val_accuracy_e{e}" for e in range(1, max_epoch + 1)] + ["history"])
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("n_params", "epochs_run"):
        frame[col] = frame[col].astype("Int64")
    return frame


def write_trials_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` (:func:`trials_frame`) as CSV to ``path`` atomically, as every output is: an
    interrupted write leaves the previous file whole. Returns the path."""
    return write_text_atomic(Path(path), frame.to_csv(index=False))


def _row(trial: FrozenTrial, param_names: list[str], max_epoch: int) -> dict[str, Any]:
    attrs = trial.user_attrs
    history = attrs.get("history")
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.values[0] if trial.values else None,  # validation accuracy, the first objective
        "best_val_accuracy": trial_score(trial),
        "datetime_start": trial.datetime_start,
        "datetime_complete": trial.datetime_complete,
        "duration_s": round(trial.duration.total_seconds(), 3) if trial.duration else None,
        "n_params": attrs.get("n_params"),
        "seconds_per_epoch": attrs.get("seconds_per_epoch"),
        "latency_ms_batch1": attrs.get("latency_ms_batch1"),
        "images_per_s_batch1024": attrs.get("images_per_s_batch1024"),
        "epochs_run": attrs.get("epochs_run"),
        "fail_reason": attrs.get("fail_reason"),
        "history": json.dumps(history, separators=(",", ":")) if history else None,
    }
    row.update({f"params_{p}": trial.params.get(p) for p in param_names})
    row.update({f"val_accuracy_e{e}": trial.intermediate_values.get(e) for e in range(1, max_epoch + 1)})
    return row
