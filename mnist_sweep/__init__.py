"""mnist_sweep: hyperparameter sweeps of Keras MLPs on MNIST with Optuna, from Python or the shell.

The public API, for notebooks and scripts (the CLI is a thin layer over exactly this)::

    import mnist_sweep as ms

    sweep = ms.with_overrides(ms.load_sweep("tutorial"), trials=6)
    study = ms.run(sweep)                           # SQLite in studies/, resumable
    ms.trials_frame(study)                          # pandas, one row per trial
    ms.report_figures(study)["history"].show()      # plotly figures, inline
    final = ms.train_final(ms.best_config(study))   # a FinalModel: .model, .test_accuracy, .metrics
    ms.predict(final.model, images)                 # [Prediction(digit=7, probability=0.99, ...)]

Names are imported lazily (PEP 562), so ``import mnist_sweep`` loads no Keras: :func:`run`
chooses the Keras backend (JAX where installed) before Keras is first imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mnist_sweep.version import __version__

#: Public name -> the module that defines it (the command line uses only these names).
_API: dict[str, str] = {
    # sweep files
    "load_sweep": "mnist_sweep.sweep.loader",
    "packaged_sweeps": "mnist_sweep.sweep.loader",
    "sweep_json_schema": "mnist_sweep.sweep.loader",
    "sweep_from_dict": "mnist_sweep.sweep.config",
    "with_overrides": "mnist_sweep.sweep.config",
    "SweepConfig": "mnist_sweep.sweep.config",
    # data
    "load_arrays": "mnist_sweep.data.dataset",
    # running a sweep, and the studies it leaves
    "run": "mnist_sweep.search.runner",
    "default_worker_id": "mnist_sweep.search.workers",
    "load_study": "mnist_sweep.search.study",
    "list_studies": "mnist_sweep.search.study",
    "study_summaries": "mnist_sweep.search.study",
    "StudySummary": "mnist_sweep.search.study",
    "chosen_trial": "mnist_sweep.search.confirmation",
    "kept_models": "mnist_sweep.search.kept_models",
    "load_kept_model": "mnist_sweep.search.kept_models",
    "KeptModel": "mnist_sweep.search.kept_models",
    "short_params": "mnist_sweep.search.progress",
    # results
    "trials_frame": "mnist_sweep.results.tables",
    "write_trials_csv": "mnist_sweep.results.tables",
    "report_figures": "mnist_sweep.results.figures",
    "write_report": "mnist_sweep.results.report",
    "best_config": "mnist_sweep.results.export",
    "export_best": "mnist_sweep.results.export",
    "serve_dashboard": "mnist_sweep.results.dashboard",
    # the final model
    "train_final": "mnist_sweep.final.retrain",
    "build_final": "mnist_sweep.final.ensemble",
    "FinalModel": "mnist_sweep.final.result",
    "load_model": "mnist_sweep.model.saving",
    "predict": "mnist_sweep.final.predict",
    "predict_files": "mnist_sweep.final.predict",
    "Prediction": "mnist_sweep.final.predict",
    "serve_model": "mnist_sweep.final.serve",
    # the bench
    "run_bench": "mnist_sweep.bench.suite",
    "format_bench": "mnist_sweep.bench.suite",
    # the process: storage, settings, files, signals
    "storage_url": "mnist_sweep._base.paths",
    "redact": "mnist_sweep.storage.rdb",
    "prepare_process": "mnist_sweep._base.settings",
    "quiet_libraries": "mnist_sweep._base.settings",
    "parse_cpu_list": "mnist_sweep._base.settings",
    "write_text_atomic": "mnist_sweep._base.files",
    "StopSignals": "mnist_sweep._base.signals",
    # errors, each with its exit code
    "InputError": "mnist_sweep.errors",
    "SweepFailed": "mnist_sweep.errors",
    "SweepInterrupted": "mnist_sweep.errors",
    "StorageUnavailable": "mnist_sweep.errors",
    "EXIT_INTERRUPTED": "mnist_sweep.errors",
    "EXIT_TERMINATED": "mnist_sweep.errors",
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from mnist_sweep._base.files import write_text_atomic
    from mnist_sweep._base.paths import storage_url
    from mnist_sweep._base.settings import parse_cpu_list, prepare_process, quiet_libraries
    from mnist_sweep._base.signals import StopSignals
    from mnist_sweep.bench.suite import format_bench, run_bench
    from mnist_sweep.data.dataset import load_arrays
    from mnist_sweep.errors import (
        EXIT_INTERRUPTED,
        EXIT_TERMINATED,
        InputError,
        StorageUnavailable,
        SweepFailed,
        SweepInterrupted,
    )
    from mnist_sweep.final.ensemble import build_final
    from mnist_sweep.final.predict import Prediction, predict, predict_files
    from mnist_sweep.final.result import FinalModel
    from mnist_sweep.final.retrain import train_final
    from mnist_sweep.final.serve import serve_model
    from mnist_sweep.model.saving import load_model
    from mnist_sweep.results.dashboard import serve_dashboard
    from mnist_sweep.results.export import best_config, export_best
    from mnist_sweep.results.figures import report_figures
    from mnist_sweep.results.report import write_report
    from mnist_sweep.results.tables import trials_frame, write_trials_csv
    from mnist_sweep.search.confirmation import chosen_trial
    from mnist_sweep.search.kept_models import KeptModel, kept_models, load_kept_model
    from mnist_sweep.search.progress import short_params
    from mnist_sweep.search.runner import run
    from mnist_sweep.search.study import StudySummary, list_studies, load_study, study_summaries
    from mnist_sweep.search.workers import default_worker_id
    from mnist_sweep.storage.rdb import redact
    from mnist_sweep.sweep.config import SweepConfig, sweep_from_dict, with_overrides
    from mnist_sweep.sweep.loader import load_sweep, packaged_sweeps, sweep_json_schema


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mnist_sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
