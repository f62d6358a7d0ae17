"""From a study to a model you use: retrain the best config (:func:`train_final`), average the kept
models (:func:`build_final`), predict images, and serve a page to try the model.
"""

from __future__ import annotations

from mnist_sweep.final.ensemble import build_final
from mnist_sweep.final.predict import Prediction, predict, predict_files
from mnist_sweep.final.result import FinalModel
from mnist_sweep.final.retrain import train_final
from mnist_sweep.final.serve import serve_model

__all__ = [
    "FinalModel",
    "train_final",
    "build_final",
    "Prediction",
    "predict",
    "predict_files",
    "serve_model",
]
