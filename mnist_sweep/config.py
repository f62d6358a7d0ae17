"""Sweep files: YAML in, one frozen, validated :class:`SweepConfig` out.

A sweep file is parsed once, at the edge, and every problem in it is reported at once,
each on a line that names the file and the key path::

    sweeps/x.yaml: space.dropout.high: must be >= low (low=0.5, high=0.2)
    sweeps/x.yaml: trails: unknown key (did you mean 'trials'?)

Nothing is written before a file has passed. The models are pydantic v2 (frozen,
``extra="forbid"``), which also gives the JSON Schema shipped as ``sweeps/sweep.schema.json``.

Example:
    >>> sweep = parse_sweep({"name": "demo", "trials": 4, "space": {"units": [64, 128]}}, "demo.yaml")
    >>> sweep.space.units.choices
    [64, 128]
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mnist_sweep.errors import InputError

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw", "nadam")
ACTIVATIONS = ("relu", "elu", "gelu", "selu", "swish", "tanh")
LR_SCHEDULES = ("constant", "cosine")

Optimizer = Literal["sgd", "rmsprop", "adam", "adamw", "nadam"]
Activation = Literal["relu", "elu", "gelu", "selu", "swish", "tanh"]
LrSchedule = Literal["constant", "cosine"]

T = TypeVar("T")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _shorthand_axis(value: Any) -> Any:
    """``units: 128`` is a fixed value, ``units: [64, 128]`` a list of choices."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list):
        return {"choices": value}
    return {"value": value}


class Choice(_Frozen, Generic[T]):
    """A categorical axis (``choices``) or a fixed ``value``."""

    choices: Annotated[list[T], Field(min_length=1)] | None = None
    value: T | None = None

    _shorthand = model_validator(mode="before")(_shorthand_axis)

    @model_validator(mode="after")
    def _one_form(self) -> Choice[T]:
        if (self.choices is None) == (self.value is None):
            raise ValueError("give either 'choices' or 'value'")
        return self

    @property
    def fixed(self) -> bool:
        return self.value is not None

    def contains(self, x: Any) -> bool:
        return x == self.value if self.fixed else x in (self.choices or [])


class Axis(Choice[T], Generic[T]):
    """A numeric axis: a ``low``..``high`` range (optional ``step`` or ``log``), ``choices`` or a ``value``."""

    low: T | None = None
    high: T | None = None
    step: T | None = None
    log: bool = False

    @field_validator("high")
    @classmethod
    def _high_not_below_low(cls, high: Any, info: ValidationInfo) -> Any:
        low = info.data.get("low")
        if high is not None and low is not None and high < low:
            raise ValueError(f"must be >= low (low={low}, high={high})")
        return high

    @field_validator("step")
    @classmethod
    def _step_positive(cls, step: Any) -> Any:
        if step is not None and step <= 0:
            raise ValueError(f"must be > 0 (got {step})")
        return step

    @model_validator(mode="after")
    def _one_form(self) -> Axis[T]:
        ranged = self.low is not None or self.high is not None
        forms = sum([ranged, self.choices is not None, self.value is not None])
        if forms != 1:
            raise ValueError("give exactly one of: 'low' and 'high', 'choices', or 'value'")
        if ranged and (self.low is None or self.high is None):
            raise ValueError("a range needs both 'low' and 'high'")
        if self.log and not ranged:
            raise ValueError("'log' applies to a low..high range only")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError(f"'log' needs low > 0 (got low={self.low})")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be used together")
        if self.step is not None and not ranged:
            raise ValueError("'step' applies to a low..high range only")
        return self

    @property
    def ranged(self) -> bool:
        return self.low is not None

    def contains(self, x: Any) -> bool:
        if self.ranged:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and self.low <= x <= self.high
        return super().contains(x)


Layers = Annotated[int, Field(ge=0, le=16)]
Units = Annotated[int, Field(ge=1, le=65536)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
BatchSize = Annotated[int, Field(ge=1, le=65536)]
Epochs = Annotated[int, Field(ge=1, le=10000)]
LearningRate = Annotated[float, Field(gt=0.0, le=10.0)]
WeightDecay = Annotated[float, Field(ge=0.0, le=1.0)]


class SearchSpace(_Frozen):
    """One entry per axis; an axis left out is fixed at its default (the tutorial's model 4)."""

    hidden_layers: Axis[Layers] = Axis[Layers](value=2)
    units: Axis[Units] = Axis[Units](value=512)
    dropout: Axis[Rate] = Axis[Rate](value=0.3)
    optimizer: Choice[Optimizer] = Choice[Optimizer](value="adam")
    batch_size: Axis[BatchSize] = Axis[BatchSize](value=128)
    epochs: Axis[Epochs] = Axis[Epochs](value=31)
    learning_rate: Axis[LearningRate] | None = Field(
        default=None, description="omitted: each optimizer's Keras default (sgd 0.01, adam 0.001, ...)"
    )
    lr_schedule: Choice[LrSchedule] = Choice[LrSchedule](value="constant")
    activation: Choice[Activation] = Choice[Activation](value="relu")
    batch_norm: Choice[bool] = Choice[bool](value=False)
    input_dropout: Axis[Rate] = Axis[Rate](value=0.0)
    weight_decay: Axis[WeightDecay] = Axis[WeightDecay](value=0.0)
    per_layer_units: bool = Field(
        default=False, description="search units_l0, units_l1, ... per hidden layer instead of one shared width"
    )
    layer_units: list[Units] | None = Field(
        default=None, description="with per_layer_units: the fixed width of each hidden layer (units_l0, "
        "units_l1, ...), as 'export' writes a per-layer trial; needs a fixed hidden_layers of the same length"
    )

    _shorthand_all = field_validator(
        "hidden_layers", "units", "dropout", "optimizer", "batch_size", "epochs", "learning_rate",
        "lr_schedule", "activation", "batch_norm", "input_dropout", "weight_decay", mode="before",
    )(lambda v: _shorthand_axis(v) if v is not None else v)

    @model_validator(mode="after")
    def _layer_units_match(self) -> SearchSpace:
        if self.layer_units is None:
            return self
        if not self.per_layer_units:
            raise ValueError("'layer_units' needs 'per_layer_units: true'")
        if not self.hidden_layers.fixed or self.hidden_layers.value != len(self.layer_units):
            raise ValueError(f"'layer_units' has {len(self.layer_units)} widths: hidden_layers must be fixed "
                             f"at {len(self.layer_units)} (got {describe_axis(self.hidden_layers)})")
        return self

    def axes(self) -> dict[str, Choice[Any]]:
        """The searched and fixed axes, in declaration order (``learning_rate`` only when given)."""
        return {
            name: getattr(self, name)
            for name in SearchSpace.model_fields
            if name not in ("per_layer_units", "layer_units") and getattr(self, name) is not None
        }

    def layer_axis(self, index: int) -> Choice[Any]:
        """The axis of ``units_l{index}`` (``per_layer_units``): its fixed ``layer_units`` width, else ``units``."""
        if self.layer_units is not None and index < len(self.layer_units):
            return Axis[Units](value=self.layer_units[index])
        return self.units


class _Seeded(_Frozen):
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


def _tag(value: Any) -> str | None:
    return value.get("name") if isinstance(value, Mapping) else getattr(value, "name", None)


SamplerConfig = Annotated[
    Annotated[TpeSampler, Tag("tpe")]
    | Annotated[RandomSampler, Tag("random")]
    | Annotated[GridSampler, Tag("grid")]
    | Annotated[CmaEsSampler, Tag("cmaes")]
    | Annotated[QmcSampler, Tag("qmc")]
    | Annotated[GpSampler, Tag("gp")],
    Discriminator(_tag, custom_error_type="unknown_name",
                  custom_error_message="must be one of: tpe, random, grid, cmaes, qmc, gp"),
]


class NoPruner(_Frozen):
    name: Literal["none"]


class MedianPruner(_Frozen):
    name: Literal["median"]
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=2, ge=0, description="epochs before a trial may be pruned")
    interval_steps: int = Field(default=1, ge=1)


class HyperbandPruner(_Frozen):
    name: Literal["hyperband"]
    min_resource: int = Field(default=1, ge=1, description="epochs")
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)


class SuccessiveHalvingPruner(_Frozen):
    name: Literal["successive_halving"]
    min_resource: int | Literal["auto"] = 1
    reduction_factor: int = Field(default=4, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)


PrunerConfig = Annotated[
    Annotated[NoPruner, Tag("none")]
    | Annotated[MedianPruner, Tag("median")]
    | Annotated[HyperbandPruner, Tag("hyperband")]
    | Annotated[SuccessiveHalvingPruner, Tag("successive_halving")],
    Discriminator(_tag, custom_error_type="unknown_name",
                  custom_error_message="must be one of: none, median, hyperband, successive_halving"),
]


class DataConfig(_Frozen):
    """Where MNIST comes from and how the training set is split. The test set is never searched on."""

    source: str = Field(
        default="bundled",
        description="'bundled' (the IDX files shipped in the package), 'keras' (downloads), "
        "a directory of the four IDX files, or an .npz with x_train, y_train, x_test, y_test",
    )
    validation_size: int = Field(default=10000, ge=10, description="images held out of the training set")
    train_size: int | None = Field(
        default=None, ge=10, description="train on only this many of the remaining images (smoke sweeps)"
    )
    seed: int = Field(default=0, description="seed of the stratified validation split")


class HeartbeatConfig(_Frozen):
    """Optuna's heartbeat (RDB storages only): a dead worker's trial turns FAIL and is retried."""

    interval: int = Field(default=10, ge=1, description="seconds between heartbeats")
    grace_period: int | None = Field(default=None, ge=2, description="default: 3 x interval")
    max_retries: int = Field(default=1, ge=0, description="re-runs of a config whose worker died")


class TrainingConfig(_Frozen):
    """How trials train (not what): settings that change speed, not the model."""

    backend: Literal["auto", "tensorflow", "jax"] = Field(
        default="auto",
        description="Keras 3 backend; 'auto': $KERAS_BACKEND if set, else jax where installed "
        "(the [jax] extra; about 2x faster per epoch on CPU), else tensorflow",
    )
    steps_per_execution: int = Field(
        default=32, ge=1, le=10000, description="batches per compiled call: fewer Python round trips per epoch"
    )


class Provenance(_Frozen):
    """Where an exported config came from."""

    study: str
    trial: int
    storage: str | None = None
    val_accuracy: float | None = None
    date: str | None = Field(default=None, description="when it was exported (ISO 8601, UTC)")


class SweepConfig(_Frozen):
    """A whole sweep file."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="mnist_sweep sweep file")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    description: str = ""
    trials: int = Field(ge=1, le=1_000_000, description="total COMPLETE + PRUNED trials the study should reach")
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="seconds per run")
    seed: int = Field(default=0, description="seeds the sampler and each trial's weights (seed + trial number)")
    sampler: Annotated[SamplerConfig, Field(default_factory=lambda: TpeSampler(name="tpe"))]
    pruner: Annotated[PrunerConfig, Field(default_factory=lambda: MedianPruner(name="median"))]
    data: DataConfig = DataConfig()
    space: SearchSpace = SearchSpace()
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="trials to run first")
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    training: TrainingConfig = TrainingConfig()
    source: Provenance | None = Field(default=None, description="set by 'export'")

    _named = field_validator("sampler", "pruner", mode="before")(_named)

    def fingerprint(self) -> str:
        """What a resumed study must share with the sweep that created it: space, data, direction."""
        space = self.space.model_dump(mode="json", exclude={"layer_units"} if self.space.layer_units is None else None)
        payload = {"space": space, "data": self.data.model_dump(mode="json"), "direction": "maximize"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Reading files


class _SweepLoader(yaml.SafeLoader):
    """Safe YAML, plus: ``1e-3`` is a float (PyYAML says str) and a duplicate key is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:
                continue  # unhashable key: SafeLoader reports it
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


_SweepLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file safely; any problem becomes an :class:`InputError` naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a YAML file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return yaml.load(text, Loader=_SweepLoader)  # noqa: S506 - _SweepLoader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise InputError(f"{path}{where}: invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file.

    Raises:
        InputError: with one line per problem, all problems at once.
    """
    path = Path(path)
    return parse_sweep(read_yaml(path), str(path), default_name=path.stem)


def parse_sweep(raw: Any, filename: str, default_name: str | None = None) -> SweepConfig:
    """Validate already-loaded YAML data; ``filename`` prefixes every error line."""
    if not isinstance(raw, Mapping):
        kind = "an empty file" if raw is None else type(raw).__name__
        raise InputError(f"{filename}: must be a mapping of keys such as 'trials' and 'space' (got {kind})")
    data = dict(raw)
    if default_name is not None and "name" not in data:
        data["name"] = default_name
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as err:
        raise InputError([f"{filename}: {line}" for line in _format_errors(err)]) from None
    problems = _check_enqueue(sweep)
    if problems:
        raise InputError([f"{filename}: {line}" for line in problems])
    return sweep


def with_overrides(sweep: SweepConfig, filename: str = "command line", **changes: Any) -> SweepConfig:
    """A copy of ``sweep`` with top-level keys replaced (``None`` values ignored), validated again."""
    data = sweep.model_dump()
    for key, value in changes.items():
        if value is None:
            continue
        if key == "data_source":
            data["data"] = {**data["data"], "source": str(value)}
        else:
            data[key] = value
    return parse_sweep(data, filename)


def resolve_sweep_path(name_or_path: str | None, sweeps_dir: Path | None = None) -> Path:
    """A path as given, or a bare name looked up in ``sweeps/`` (``None`` means ``default``)."""
    name = name_or_path or "default"
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name:
        return path
    dirs = [sweeps_dir] if sweeps_dir else [Path.cwd() / "sweeps", Path(__file__).resolve().parents[1] / "sweeps"]
    for folder in dirs:
        for suffix in (".yaml", ".yml"):
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.y*ml")})
    hint = difflib.get_close_matches(name, known, n=1)
    extra = f" (did you mean '{hint[0]}'?)" if hint else (f" (known: {', '.join(known)})" if known else "")
    raise InputError(f"{name}: no such sweep file in sweeps/{extra}")


def sweep_json_schema() -> dict[str, Any]:
    """The JSON Schema of sweep files, as shipped in ``sweeps/sweep.schema.json``."""
    schema = SweepConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# ---------------------------------------------------------------------------------------------
# Error messages


def _known_keys() -> set[str]:
    models = [SweepConfig, SearchSpace, Axis, Choice, DataConfig, HeartbeatConfig, TrainingConfig, Provenance,
              TpeSampler, QmcSampler, MedianPruner, HyperbandPruner, SuccessiveHalvingPruner]
    return {name for model in models for name in model.model_fields}


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if len(parts) >= 2 and parts[0] in ("sampler", "pruner"):
        del parts[1]  # the union's tag, e.g. sampler.tpe.seed -> sampler.seed
    return ".".join(str(p) for p in parts) or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_errors(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        loc = _format_loc(e["loc"])
        kind = e["type"]
        if kind == "extra_forbidden":
            key = str(e["loc"][-1])
            hint = difflib.get_close_matches(key, _known_keys(), n=1, cutoff=0.7)
            lines.append(f"{loc}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        elif kind == "missing":
            lines.append(f"{loc}: required key is missing")
        elif kind in ("value_error", "assertion_error"):
            lines.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
        elif kind == "unknown_name":
            lines.append(f"{loc}.name: {e['msg']} (got {_short(_tag(e['input']))})")
        else:
            lines.append(f"{loc}: {e['msg']} (got {_short(e['input'])})")
    return lines


def _check_enqueue(sweep: SweepConfig) -> list[str]:
    axes = sweep.space.axes()
    layer_units = {f"units_l{i}" for i in range(16)} if sweep.space.per_layer_units else set()
    problems = []
    for i, params in enumerate(sweep.enqueue):
        if not isinstance(params, Mapping):
            problems.append(f"enqueue.{i}: must be a mapping of axis: value (got {_short(params)})")
            continue
        for key, value in params.items():
            where = f"enqueue.{i}.{key}"
            if key in layer_units:
                axis = sweep.space.layer_axis(int(str(key).removeprefix("units_l")))
            elif key not in axes:
                hint = difflib.get_close_matches(str(key), list(axes), n=1)
                problems.append(f"{where}: unknown axis" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
                continue
            else:
                axis = axes[key]
            if not axis.contains(value):
                problems.append(f"{where}: {_short(value)} is outside the search space ({describe_axis(axis)})")
    return problems


def describe_axis(axis: Choice[Any]) -> str:
    """A short human description: ``0.1..0.5 step 0.1``, ``one of [64, 128]``, ``fixed 0.3``."""
    if isinstance(axis, Axis) and axis.ranged:
        extra = " log" if axis.log else (f" step {axis.step}" if axis.step is not None else "")
        return f"{axis.low}..{axis.high}{extra}"
    if axis.fixed:
        return f"fixed {axis.value!r}"
    return f"one of {axis.choices!r}"
