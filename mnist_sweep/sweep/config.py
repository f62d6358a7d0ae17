"""The sweep config: one frozen, validated :class:`SweepConfig` per sweep, made once at the edge.

A sweep (from a file, see :mod:`mnist_sweep.sweep.loader`, or from a dict) is validated once and
every problem in it is reported at once, each on a line that names the source and the key path::

    sweeps/x.yaml: space.dropout.high: must be >= low (low=0.5, high=0.2)
    sweeps/x.yaml: trails: unknown key (did you mean 'trials'?)

Nothing is written before a sweep has passed. The models are pydantic v2 (frozen,
``extra="forbid"``), which also gives the JSON Schema shipped with the package.

Example:
    >>> sweep = sweep_from_dict({"name": "demo", "trials": 4, "space": {"units": [64, 128]}})
    >>> sweep.space.units.choices
    [64, 128]
    >>> with_overrides(sweep, trials=8).trials
    8
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from mnist_sweep.errors import InputError
from mnist_sweep.sweep._messages import check_enqueue, format_errors, tag_of
from mnist_sweep.sweep._sections import (
    ConfirmConfig,
    HeartbeatConfig,
    KeepConfig,
    PackConfig,
    Provenance,
    StorageRetryConfig,
    TrainingConfig,
)
from mnist_sweep.sweep.goals import ACCURACY, ObjectiveName, directions
from mnist_sweep.sweep.space import Axis, Choice, Frozen, SearchSpace

#: Seeds go to numpy and the backends, which take 32-bit seeds; the trial number and worker are added to it.
MAX_SEED = 2**31 - 1


class _Seeded(Frozen):
    seed: int | None = Field(default=None, description="default: the sweep's seed")


class TpeSampler(_Seeded):
    name: Literal["tpe"]
    n_startup_trials: int = Field(default=10, ge=0)
    multivariate: bool = True
    constant_liar: bool = Field(default=True, description="avoid duplicate suggestions among parallel workers")


class RandomSampler(_Seeded):
    name: Literal["random"]


class GridSampler(_Seeded):
    name: Literal["grid"]


class CmaEsSampler(_Seeded):
    name: Literal["cmaes"]
    n_startup_trials: int = Field(default=1, ge=0)


class QmcSampler(_Seeded):
    name: Literal["qmc"]
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True


class GpSampler(_Seeded):
    name: Literal["gp"]
    n_startup_trials: int = Field(default=10, ge=0)


def _named(value: Any) -> Any:
    """``sampler: tpe`` is short for ``sampler: {name: tpe}``."""
    return {"name": value} if isinstance(value, str) else value


SamplerConfig = Annotated[
    Annotated[TpeSampler, Tag("tpe")]
    | Annotated[RandomSampler, Tag("random")]
    | Annotated[GridSampler, Tag("grid")]
    | Annotated[CmaEsSampler, Tag("cmaes")]
    | Annotated[QmcSampler, Tag("qmc")]
    | Annotated[GpSampler, Tag("gp")],
    Discriminator(tag_of, custom_error_type="unknown_name",
                  custom_error_message="must be one of: tpe, random, grid, cmaes, qmc, gp"),
]


class NoPruner(Frozen):
    name: Literal["none"]


class MedianPruner(Frozen):
    name: Literal["median"]
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=2, ge=0, description="epochs before a trial may be pruned")
    interval_steps: int = Field(default=1, ge=1)


class HyperbandPruner(Frozen):
    name: Literal["hyperband"]
    min_resource: int = Field(default=1, ge=1, description="epochs")
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)


class SuccessiveHalvingPruner(Frozen):
    name: Literal["successive_halving"]
    min_resource: int | Literal["auto"] = 1
    reduction_factor: int = Field(default=4, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)


PrunerConfig = Annotated[
    Annotated[NoPruner, Tag("none")]
    | Annotated[MedianPruner, Tag("median")]
    | Annotated[HyperbandPruner, Tag("hyperband")]
    | Annotated[SuccessiveHalvingPruner, Tag("successive_halving")],
    Discriminator(tag_of, custom_error_type="unknown_name",
                  custom_error_message="must be one of: none, median, hyperband, successive_halving"),
]


class DataConfig(Frozen):
    """Where the images come from and how they are split. The test set is never searched on."""

    source: str = Field(
        default="bundled",
        description="'bundled' (the IDX files shipped in the package), 'keras' (downloads), "
        "a directory of the four IDX files, an .npz with x_train, y_train, x_test, y_test, a folder of images "
        "with one subfolder per class (optionally under train/ and test/), or a label,pixel0,... CSV",
    )
    validation_size: int = Field(default=10000, ge=10, description="images held out of the training set")
    train_size: int | None = Field(
        default=None, ge=10, description="train on only this many of the remaining images (smoke sweeps)"
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seed of the stratified validation split (and of "
                      "a carved test split)")
    image_size: int | None = Field(default=None, ge=4, le=256, description="an image folder's images are "
                                   "resized to this side; default: their most common size")
    test_source: str | None = Field(default=None, description="a pixel CSV's labelled test CSV")
    test_fraction: float = Field(default=0.2, gt=0, lt=0.9, description="share of the images carved as the "
                                 "test set when the source has no test split (seeded, stratified, the same every time)")


class SweepConfig(Frozen):
    """A whole sweep file."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="mnist_sweep sweep file")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    description: str = ""
    trials: int = Field(ge=1, le=1_000_000, description="total COMPLETE + PRUNED trials the study should reach")
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                  description="seconds per run after which no new trial starts")
    hard_timeout: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="seconds per run after which a running trial stops "
        "at the end of its epoch, recorded PRUNED (it did not finish): bounds the wall time a budget allows")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seeds the sampler and each trial's weights "
                      "(seed + trial number)")
    sampler: Annotated[SamplerConfig, Field(default_factory=lambda: TpeSampler(name="tpe"))]
    pruner: Annotated[PrunerConfig, Field(default_factory=lambda: MedianPruner(name="median"))]
    data: DataConfig = DataConfig()
    space: SearchSpace = SearchSpace()
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="trials to run first")
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    storage_retry: StorageRetryConfig = StorageRetryConfig()
    trial_timeout: float | None = Field(
        default=None, gt=0, le=31_536_000, allow_inf_nan=False, description="seconds after which a running trial "
        "is failed (reason recorded, checked every few batches) and the worker goes on with the next: a runaway "
        "or stuck trial; default: none")
    training: TrainingConfig = TrainingConfig()
    pack: PackConfig = PackConfig()
    keep: KeepConfig = KeepConfig()
    confirm: ConfirmConfig = ConfirmConfig()
    objectives: list[ObjectiveName] = Field(
        default_factory=lambda: [ACCURACY], min_length=1, max_length=3,
        description="val_accuracy first (maximised); n_params and/or latency_ms_batch1 after it (minimised) make "
                    "an Optuna multi-objective study with a Pareto front, which cannot prune (pruner: none)")
    source: Provenance | None = Field(default=None, description="set by 'export'")

    _named = field_validator("sampler", "pruner", mode="before")(_named)

    @model_validator(mode="before")
    @classmethod
    def _no_pruning_default_for_several_objectives(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("objectives"), list) and len(data["objectives"]) > 1 \
                and data.get("pruner") is None:
            data = {**data, "pruner": {"name": "none"}}
        return data

    @model_validator(mode="after")
    def _objectives_make_sense(self) -> SweepConfig:
        names = self.objectives
        if names[0] != ACCURACY or len(set(names)) != len(names):
            raise ValueError(f"objectives: want val_accuracy first, then n_params and/or latency_ms_batch1 once each; "
                             f"got {names}")
        if len(names) > 1 and self.pruner.name != "none":
            raise ValueError(f"pruner: {self.pruner.name} cannot prune a multi-objective sweep (Optuna prunes on one "
                             "objective's epochs); leave pruner out or set pruner: {name: none}")
        if len(names) > 1 and self.sampler.name == "cmaes":
            raise ValueError("sampler: cmaes optimises one objective; use tpe, random, qmc or grid with objectives")
        if self.hard_timeout is not None and self.timeout is not None and self.hard_timeout < self.timeout:
            raise ValueError(f"hard_timeout: {self.hard_timeout:g} is below timeout {self.timeout:g}")
        if "latency_ms_batch1" in names and not self.training.measure_latency:
            raise ValueError("objectives: latency_ms_batch1 needs training.measure_latency: true")
        return self

    def fingerprint(self) -> str:
        """What a resumed study must share with the sweep that created it: space, data, direction(s)."""
        payload: dict[str, Any] = {"space": self.space.fingerprint_dump(), "data": self.data.model_dump(mode="json"),
                                   "direction": "maximize"}
        if len(self.objectives) > 1:  # single-objective studies made before objectives existed still resume
            payload["direction"] = list(zip(self.objectives, directions(self.objectives), strict=True))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def parse_sweep(raw: Any, filename: str, default_name: str | None = None) -> SweepConfig:
    """Validate already-loaded sweep data; ``filename`` prefixes every error line.

    Raises:
        InputError: one line per problem, all problems at once.
    """
    if not isinstance(raw, Mapping):
        kind = "an empty file" if raw is None else type(raw).__name__
        raise InputError(f"{filename}: must be a mapping of keys such as 'trials' and 'space' (got {kind})")
    data = dict(raw)
    if default_name is not None and "name" not in data:
        data["name"] = default_name
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as err:
        raise InputError([f"{filename}: {line}" for line in format_errors(err, _known_keys())]) from None
    problems = check_enqueue(sweep.enqueue, sweep.space)
    if problems:
        raise InputError([f"{filename}: {line}" for line in problems])
    return sweep


def sweep_from_dict(data: Mapping[str, Any], name: str = "sweep") -> SweepConfig:
    """A sweep from a plain mapping (what a sweep file holds), validated as a file would be.

    ``name`` is the study name when the mapping has none, and prefixes error lines.

    Example:
        >>> sweep_from_dict({"trials": 3, "space": {"units": [32, 64]}}, name="mine").name
        'mine'
    """
    return parse_sweep(data, f"sweep '{data.get('name', name)}'", default_name=name)


def with_overrides(sweep: SweepConfig, *, trials: int | None = None, timeout: float | None = None,
                   seed: int | None = None, data: str | None = None, pack: int | str | None = None,
                   origin: str = "overrides") -> SweepConfig:
    """A copy of ``sweep`` with some top-level settings replaced (``None`` keeps the sweep's), validated again.

    Args:
        trials: the study's target of COMPLETE + PRUNED trials.
        timeout: seconds after which a run starts no new trial.
        seed: sampler and weight-initialisation seed.
        data: a data source (``bundled``, an IDX directory, an ``.npz``), replacing ``data.source``.
        pack: trials trained together as one program (``pack.members``; 1: one at a time; ``"auto"``:
            by the device).
        origin: names the overrides in error lines (the CLI says "command line").
    """
    changes: dict[str, Any] = {"trials": trials, "timeout": timeout, "seed": seed}
    dumped = sweep.model_dump()
    dumped.update({k: v for k, v in changes.items() if v is not None})
    if timeout is not None and sweep.hard_timeout is not None:  # the same grace after the new timeout
        dumped["hard_timeout"] = timeout + sweep.hard_timeout - (sweep.timeout or sweep.hard_timeout)
    if data is not None:
        dumped["data"] = {**dumped["data"], "source": str(data)}
    if pack is not None:
        dumped["pack"] = {**dumped["pack"], "members": pack}
    return parse_sweep(dumped, f"sweep '{sweep.name}' ({origin})")


def _known_keys() -> set[str]:
    models = [SweepConfig, SearchSpace, Axis, Choice, DataConfig, HeartbeatConfig, TrainingConfig, KeepConfig,
              PackConfig, ConfirmConfig, StorageRetryConfig, Provenance,
              TpeSampler, QmcSampler, MedianPruner, HyperbandPruner, SuccessiveHalvingPruner]
    return {name for model in models for name in model.model_fields}
