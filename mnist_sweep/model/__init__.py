"""The one Keras model factory and what goes with a model: its layers, training (``fit``), inference
latency, and loading a saved ``.keras`` file. Keras is imported only when a function needs it.
"""

from __future__ import annotations

from mnist_sweep.model.factory import TUTORIAL_MODELS, build_model, count_params, layer_widths
from mnist_sweep.model.latency import measure_inference
from mnist_sweep.model.saving import class_names, input_side, load_model, preprocessing
from mnist_sweep.model.training import FitResult, fit, fresh_keras

__all__ = [
    "build_model",
    "count_params",
    "layer_widths",
    "TUTORIAL_MODELS",
    "fit",
    "fresh_keras",
    "FitResult",
    "measure_inference",
    "load_model",
    "input_side",
    "class_names",
    "preprocessing",
]
