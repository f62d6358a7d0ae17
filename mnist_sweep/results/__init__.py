"""What a finished (or running) study shows: the trials table, anytime curves, trade-off fronts,
plotly figures, the HTML report, the best config as a sweep file, and optuna-dashboard.
"""

from __future__ import annotations

from mnist_sweep.results.dashboard import serve_dashboard
from mnist_sweep.results.export import best_config, export_best
from mnist_sweep.results.figures import report_figures
from mnist_sweep.results.report import write_report
from mnist_sweep.results.tables import trials_frame, write_trials_csv

__all__ = [
    "trials_frame",
    "write_trials_csv",
    "report_figures",
    "write_report",
    "best_config",
    "export_best",
    "serve_dashboard",
]
