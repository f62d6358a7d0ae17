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
    "load_sweep": "mnist_sweep.sweep_files",
    "packaged_sweeps": "mnist_sweep.sweep_files",
    "sweep_from_dict": "mnist_sweep.config",
    "with_overrides": "mnist_sweep.config",
    "SweepConfig": "mnist_sweep.config",
    "run": "mnist_sweep.runner",
    "load_study": "mnist_sweep.study",
    "list_studies": "mnist_sweep.study",
    "trials_frame": "mnist_sweep.tables",
    "report_figures": "mnist_sweep.figures",
    "write_report": "mnist_sweep.report",
    "best_config": "mnist_sweep.export",
    "export_best": "mnist_sweep.export",
    "train_final": "mnist_sweep.retrain",
    "build_final": "mnist_sweep.final_model",
    "FinalModel": "mnist_sweep.retrain",
    "load_model": "mnist_sweep.inference",
    "predict": "mnist_sweep.inference",
    "predict_files": "mnist_sweep.inference",
    "Prediction": "mnist_sweep.inference",
    "InputError": "mnist_sweep.errors",
    "SweepFailed": "mnist_sweep.errors",
    "SweepInterrupted": "mnist_sweep.errors",
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from mnist_sweep.config import SweepConfig, sweep_from_dict, with_overrides
    from mnist_sweep.errors import InputError, SweepFailed, SweepInterrupted
    from mnist_sweep.export import best_config, export_best
    from mnist_sweep.figures import report_figures
    from mnist_sweep.final_model import build_final
    from mnist_sweep.inference import Prediction, load_model, predict, predict_files
    from mnist_sweep.report import write_report
    from mnist_sweep.retrain import FinalModel, train_final
    from mnist_sweep.runner import run
    from mnist_sweep.study import list_studies, load_study
    from mnist_sweep.sweep_files import load_sweep, packaged_sweeps
    from mnist_sweep.tables import trials_frame


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mnist_sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
