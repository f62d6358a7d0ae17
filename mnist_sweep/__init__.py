"""mnist_sweep: hyperparameter sweeps of Keras MLPs on MNIST with Optuna, from Python or the shell.

The public API, for notebooks and scripts (the CLI is a thin layer over exactly this)::

    import mnist_sweep as ms

    sweep = ms.with_overrides(ms.load_sweep("tutorial"), trials=6)
    study = ms.run(sweep)                           # SQLite in studies/, resumable
    ms.trials_frame(study)                          # pandas, one row per trial
    ms.report_figures(study)["history"].show()      # plotly figures, inline
    final = ms.train_final(ms.best_config(study))   # .model, .test_accuracy, .metrics
    ms.predict(final.model, images)                 # [Prediction(digit=7, probability=0.99, ...)]

Names are imported lazily (PEP 562), so ``import mnist_sweep`` loads no Keras: :func:`run`
chooses the Keras backend (JAX where installed) before Keras is first imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mnist_sweep.version import __version__

#: Public name -> the module that defines it.
_API: dict[str, str] = {
    "load_sweep": "mnist_sweep.sweep.loader",
    "packaged_sweeps": "mnist_sweep.sweep.loader",
    "sweep_from_dict": "mnist_sweep.sweep.config",
    "with_overrides": "mnist_sweep.sweep.config",
    "SweepConfig": "mnist_sweep.sweep.config",
    "run": "mnist_sweep.search.runner",
    "load_study": "mnist_sweep.search.study",
    "list_studies": "mnist_sweep.search.study",
    "trials_frame": "mnist_sweep.results.tables",
    "report_figures": "mnist_sweep.results.figures",
    "write_report": "mnist_sweep.results.report",
    "best_config": "mnist_sweep.results.export",
    "export_best": "mnist_sweep.results.export",
    "train_final": "mnist_sweep.final.retrain",
    "build_final": "mnist_sweep.final.ensemble",
    "FinalModel": "mnist_sweep.final.retrain",
    "load_model": "mnist_sweep.model.saving",
    "predict": "mnist_sweep.final.predict",
    "predict_files": "mnist_sweep.final.predict",
    "Prediction": "mnist_sweep.final.predict",
    "InputError": "mnist_sweep.errors",
    "SweepFailed": "mnist_sweep.errors",
    "SweepInterrupted": "mnist_sweep.errors",
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from mnist_sweep.errors import InputError, SweepFailed, SweepInterrupted
    from mnist_sweep.final.ensemble import build_final
    from mnist_sweep.final.predict import Prediction, predict, predict_files
    from mnist_sweep.final.retrain import FinalModel, train_final
    from mnist_sweep.model.saving import load_model
    from mnist_sweep.results.export import best_config, export_best
    from mnist_sweep.results.figures import report_figures
    from mnist_sweep.results.report import write_report
    from mnist_sweep.results.tables import trials_frame
    from mnist_sweep.search.runner import run
    from mnist_sweep.search.study import list_studies, load_study
    from mnist_sweep.sweep.config import SweepConfig, sweep_from_dict, with_overrides
    from mnist_sweep.sweep.loader import load_sweep, packaged_sweeps


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mnist_sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
