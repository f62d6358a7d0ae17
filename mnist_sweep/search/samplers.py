"""Samplers and pruners: the sweep's ``sampler:`` and ``pruner:`` as Optuna objects.

Steps are epochs: a trial reports its validation accuracy after each epoch, and the pruner
decides on those reports.

Example:
    >>> sampler, pruner = make_sampler(sweep), make_pruner(sweep)
"""

from __future__ import annotations

from typing import Any

import optuna

from mnist_sweep.errors import InputError
from mnist_sweep.sweep.config import SweepConfig
from mnist_sweep.sweep.space import Axis, is_int_axis


def make_sampler(sweep: SweepConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler, seeded with ``sampler.seed`` or the sweep's seed.

    ``worker`` (0, 1, ...) offsets the seed of the random and model-based samplers, so parallel
    workers sharing a study do not propose the same configs at the same moment. QMC and grid keep
    the one seed: their workers index one shared sequence by trial number.
    """
    cfg = sweep.sampler
    seed = cfg.seed if cfg.seed is not None else sweep.seed
    if cfg.name not in ("qmc", "grid") and seed is not None:
        seed += worker
    if cfg.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials,
                                          multivariate=cfg.multivariate, constant_liar=cfg.constant_liar)
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "grid":
        return optuna.samplers.GridSampler(_grid(sweep), seed=seed)
    if cfg.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=cfg.n_startup_trials)
    if cfg.name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, qmc_type=cfg.qmc_type, scramble=cfg.scramble)
    if cfg.name == "gp":
        try:
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup_trials)
        except ImportError:
            raise InputError("sampler.name: 'gp' needs PyTorch (pip install torch)") from None
    raise AssertionError(cfg.name)


def _grid(sweep: SweepConfig) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for name, axis in sweep.space.axes().items():
        if isinstance(axis, Axis) and axis.ranged:
            if axis.step is None and not is_int_axis(name):
                raise InputError(f"space.{name}: the grid sampler needs 'choices' or a 'step' on a float range")
            step = axis.step or 1
            count = int(round((axis.high - axis.low) / step)) + 1
            grid[name] = [round(axis.low + i * step, 10) for i in range(count)]
        else:
            grid[name] = list(axis.choices) if axis.choices is not None else [axis.value]
    return grid


def make_pruner(sweep: SweepConfig) -> optuna.pruners.BasePruner:
    """The sweep's pruner; steps are epochs."""
    cfg = sweep.pruner
    if cfg.name == "none":
        return optuna.pruners.NopPruner()
    if cfg.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials,
                                           n_warmup_steps=cfg.n_warmup_steps, interval_steps=cfg.interval_steps)
    if cfg.name == "hyperband":
        max_resource = cfg.max_resource
        epochs = sweep.space.epochs
        if max_resource == "auto" and epochs.ranged:
            max_resource = epochs.high
        elif max_resource == "auto":
            max_resource = max(epochs.choices or [epochs.value])
        return optuna.pruners.HyperbandPruner(min_resource=cfg.min_resource, max_resource=max_resource,
                                              reduction_factor=cfg.reduction_factor)
    if cfg.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.min_resource,
                                                      reduction_factor=cfg.reduction_factor,
                                                      min_early_stopping_rate=cfg.min_early_stopping_rate)
    raise AssertionError(cfg.name)
