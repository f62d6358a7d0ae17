"""The search itself: the Optuna objective that trains one trial, the sweep loop over a study,
samplers and pruners, winner confirmation, kept models, worker processes and progress lines.
"""

from __future__ import annotations

from mnist_sweep.search.confirmation import chosen_trial, config_groups, trial_rank
from mnist_sweep.search.kept_models import KeptModel, kept_models, load_kept_model
from mnist_sweep.search.loop import LoopOptions, run_sweep
from mnist_sweep.search.objective import Objective, TrialBudget, TrialOutcome
from mnist_sweep.search.runner import run
from mnist_sweep.search.samplers import make_pruner, make_sampler
from mnist_sweep.search.study import (
    DONE_STATES,
    StudySummary,
    count_states,
    list_studies,
    load_study,
    open_study,
    study_summaries,
)
from mnist_sweep.search.workers import default_worker_id, run_workers

__all__ = [
    "run",
    "run_sweep",
    "LoopOptions",
    "open_study",
    "load_study",
    "list_studies",
    "study_summaries",
    "StudySummary",
    "count_states",
    "DONE_STATES",
    "Objective",
    "TrialBudget",
    "TrialOutcome",
    "make_sampler",
    "make_pruner",
    "chosen_trial",
    "config_groups",
    "trial_rank",
    "KeptModel",
    "kept_models",
    "load_kept_model",
    "run_workers",
    "default_worker_id",
]
