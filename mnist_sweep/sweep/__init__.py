"""What a sweep is: the validated config (:class:`SweepConfig`) and its sections, the search space,
the objectives it optimises, the YAML files (the shipped ones in ``shipped/``) and a trial's params.
Loads no Keras.
"""

from __future__ import annotations

from mnist_sweep.sweep._sections import ConfirmConfig, HeartbeatConfig, KeepConfig, StorageRetryConfig, TrainingConfig
from mnist_sweep.sweep.config import DataConfig, SweepConfig, parse_sweep, sweep_from_dict, with_overrides
from mnist_sweep.sweep.goals import ACCURACY, accuracy_of, best_trial, directions, is_multi_objective
from mnist_sweep.sweep.loader import load_sweep, packaged_sweeps, sweep_json_schema
from mnist_sweep.sweep.params import fixed_params, suggest_params
from mnist_sweep.sweep.space import Axis, Choice, SearchSpace, describe_axis

__all__ = [
    "SweepConfig",
    "DataConfig",
    "parse_sweep",
    "sweep_from_dict",
    "with_overrides",
    "HeartbeatConfig",
    "TrainingConfig",
    "KeepConfig",
    "ConfirmConfig",
    "StorageRetryConfig",
    "SearchSpace",
    "Axis",
    "Choice",
    "describe_axis",
    "ACCURACY",
    "accuracy_of",
    "best_trial",
    "directions",
    "is_multi_objective",
    "load_sweep",
    "packaged_sweeps",
    "sweep_json_schema",
    "fixed_params",
    "suggest_params",
]
