"""The search space: its axes, their option lists and defaults, and how trial params are named.

This module is the one source of:

- the **option lists** (:data:`OPTIMIZERS`, :data:`ACTIVATIONS`, :data:`LR_SCHEDULES`) that the
  sweep-file validation, the JSON Schema and the model factory share;
- the **defaults** of every axis (:data:`DEFAULT_PARAMS`, the tutorial's model 4): an axis a
  sweep leaves out is fixed at it, and the model factory fills a missing param from it;
- the **names** of per-layer widths, ``units_l0``, ``units_l1``, ... (:func:`layer_units_name`).

Example:
    >>> space = SearchSpace.model_validate({"units": [64, 128], "dropout": {"low": 0, "high": 0.5}})
    >>> describe_axis(space.units), describe_axis(space.dropout), describe_axis(space.epochs)
    ('one of [64, 128]', '0.0..0.5', 'fixed 31')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Optimizer = Literal["sgd", "rmsprop", "adam", "adamw", "nadam"]
Activation = Literal["relu", "elu", "gelu", "selu", "swish", "tanh"]
LrSchedule = Literal["constant", "cosine"]
Architecture = Literal["mlp", "cnn"]
Pooling = Literal["max", "average", "none"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)

#: The tutorial's model 4 (784-512-512-10, dropout 0.3, Adam, batch 128, 31 epochs; 98.24% test).
DEFAULT_PARAMS: dict[str, Any] = {
    "hidden_layers": 2,
    "units": 512,
    "dropout": 0.3,
    "optimizer": "adam",
    "batch_size": 128,
    "epochs": 31,
    "lr_schedule": "constant",
    "activation": "relu",
    "batch_norm": False,
    "input_dropout": 0.0,
    "weight_decay": 0.0,
    "augment_shift": 0.0,
    "augment_rotation": 0.0,
    "augment_scale": 0.0,
    "augment_elastic": 0.0,
    "deskew": False,
    "architecture": "mlp",
    "conv_blocks": 2,
    "filters": 32,
    "kernel_size": 3,
    "pooling": "max",
    "head_units": 128,
}

#: The axes only a convolutional network has (``architecture: cnn``); an MLP's own are ``hidden_layers``,
#: ``units`` and the per-layer widths. Neither family's axes are asked of a trial of the other.
CNN_AXES = ("conv_blocks", "filters", "kernel_size", "pooling", "head_units")
MLP_AXES = ("hidden_layers", "units")

#: Axes added after studies already existed: left at their defaults they stay out of a study's
#: fingerprint, so those studies still resume.
LATER_AXES = ("layer_units", "augment_shift", "augment_rotation", "augment_scale", "augment_elastic",
              "deskew", "architecture", *CNN_AXES)

#: Axes whose values are whole numbers (suggested with ``suggest_int``), per-layer widths included.
INT_AXES = frozenset({"hidden_layers", "units", "batch_size", "epochs", "conv_blocks", "filters", "kernel_size",
                      "head_units"})
MAX_HIDDEN_LAYERS = 16
_LAYER_UNITS = re.compile(r"units_l(\d+)")

T = TypeVar("T")


def layer_units_name(index: int) -> str:
    """The trial param holding hidden layer ``index``'s width: ``units_l0``, ``units_l1``, ..."""
    return f"units_l{index}"


def layer_index(name: str) -> int | None:
    """The layer index of a per-layer width param (``units_l3`` -> 3), else None."""
    match = _LAYER_UNITS.fullmatch(name)
    return int(match.group(1)) if match else None


def is_int_axis(name: str) -> bool:
    """True for the axes suggested as integers (per-layer widths included)."""
    return name in INT_AXES or layer_index(name) is not None


class Frozen(BaseModel):
    """Base of every config model: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _shorthand_axis(value: Any) -> Any:
    """``units: 128`` is a fixed value, ``units: [64, 128]`` a list of choices."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list):
        return {"choices": value}
    return {"value": value}


class Choice(Frozen, Generic[T]):
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


Layers = Annotated[int, Field(ge=0, le=MAX_HIDDEN_LAYERS)]
Units = Annotated[int, Field(ge=1, le=65536)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
BatchSize = Annotated[int, Field(ge=1, le=65536)]
Epochs = Annotated[int, Field(ge=1, le=10000)]
LearningRate = Annotated[float, Field(gt=0.0, le=10.0)]
WeightDecay = Annotated[float, Field(ge=0.0, le=1.0)]
ShiftPixels = Annotated[float, Field(ge=0.0, le=8.0)]
RotationDegrees = Annotated[float, Field(ge=0.0, le=45.0)]
ScaleFraction = Annotated[float, Field(ge=0.0, lt=0.5)]
ElasticAlpha = Annotated[float, Field(ge=0.0, le=100.0)]
ConvBlocks = Annotated[int, Field(ge=1, le=4)]
Filters = Annotated[int, Field(ge=1, le=1024)]
KernelSize = Annotated[int, Field(ge=1, le=7)]

_D = DEFAULT_PARAMS


class SearchSpace(Frozen):
    """One entry per axis; an axis left out is fixed at its default (:data:`DEFAULT_PARAMS`)."""

    hidden_layers: Axis[Layers] = Axis[Layers](value=_D["hidden_layers"])
    units: Axis[Units] = Axis[Units](value=_D["units"])
    dropout: Axis[Rate] = Axis[Rate](value=_D["dropout"])
    optimizer: Choice[Optimizer] = Choice[Optimizer](value=_D["optimizer"])
    batch_size: Axis[BatchSize] = Axis[BatchSize](value=_D["batch_size"])
    epochs: Axis[Epochs] = Axis[Epochs](value=_D["epochs"])
    learning_rate: Axis[LearningRate] | None = Field(
        default=None, description="omitted: each optimizer's Keras default (sgd 0.01, adam 0.001, ...)"
    )
    lr_schedule: Choice[LrSchedule] = Choice[LrSchedule](value=_D["lr_schedule"])
    activation: Choice[Activation] = Choice[Activation](value=_D["activation"])
    batch_norm: Choice[bool] = Choice[bool](value=_D["batch_norm"])
    input_dropout: Axis[Rate] = Axis[Rate](value=_D["input_dropout"])
    weight_decay: Axis[WeightDecay] = Axis[WeightDecay](value=_D["weight_decay"])
    augment_shift: Axis[ShiftPixels] = Field(
        default=Axis[ShiftPixels](value=_D["augment_shift"]),
        description="training images only: random shift of up to this many pixels along each axis")
    augment_rotation: Axis[RotationDegrees] = Field(
        default=Axis[RotationDegrees](value=_D["augment_rotation"]),
        description="training images only: random rotation of up to this many degrees either way")
    augment_scale: Axis[ScaleFraction] = Field(
        default=Axis[ScaleFraction](value=_D["augment_scale"]),
        description="training images only: random scaling by a factor in 1 +- this")
    augment_elastic: Axis[ElasticAlpha] = Field(
        default=Axis[ElasticAlpha](value=_D["augment_elastic"]),
        description="training images only: elastic distortion of this strength (Simard et al.'s alpha, "
                    "smoothed over 4 pixels; 34 in their paper), 0 for none")
    deskew: Choice[bool] = Field(
        default=Choice[bool](value=_D["deskew"]),
        description="straighten each image's slant and centre it on its centre of mass (training, validation, "
                    "test and predict alike: the model does it)")
    architecture: Choice[Architecture] = Field(
        default=Choice[Architecture](value=_D["architecture"]),
        description="'mlp' (hidden_layers Dense layers of units) or 'cnn' (conv_blocks convolution blocks, then a "
                    "Dense head of head_units); both share dropout, batch_norm, activation, augmentation, deskew")
    conv_blocks: Axis[ConvBlocks] = Field(
        default=Axis[ConvBlocks](value=_D["conv_blocks"]),
        description="cnn: convolution blocks, each two convolutions (batch-normalised if batch_norm), then pooling")
    filters: Axis[Filters] = Field(
        default=Axis[Filters](value=_D["filters"]),
        description="cnn: filters of the first block's convolutions; each later block has twice its predecessor's")
    kernel_size: Axis[KernelSize] = Field(
        default=Axis[KernelSize](value=_D["kernel_size"]), description="cnn: the convolutions' kernel side")
    pooling: Choice[Pooling] = Field(
        default=Choice[Pooling](value=_D["pooling"]),
        description="cnn: 2 x 2 pooling after each block ('max', 'average'), or 'none' (a stride-2 second "
                    "convolution halves the image instead)")
    head_units: Axis[Units] = Field(
        default=Axis[Units](value=_D["head_units"]),
        description="cnn: width of the Dense layer between the last block and the output (dropout after it)")
    per_layer_units: bool = Field(
        default=False, description="search units_l0, units_l1, ... per hidden layer instead of one shared width"
    )
    layer_units: list[Units] | None = Field(
        default=None, description="with per_layer_units: the fixed width of each hidden layer (units_l0, "
        "units_l1, ...), as 'export' writes a per-layer trial; needs a fixed hidden_layers of the same length"
    )

    _shorthand_all = field_validator(
        "hidden_layers", "units", "dropout", "optimizer", "batch_size", "epochs", "learning_rate",
        "lr_schedule", "activation", "batch_norm", "input_dropout", "weight_decay", "augment_shift",
        "augment_rotation", "augment_scale", "augment_elastic", "deskew", "architecture", "conv_blocks", "filters",
        "kernel_size", "pooling", "head_units", mode="before",
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

    def fingerprint_dump(self) -> dict[str, Any]:
        """The space as a study's fingerprint holds it: :data:`LATER_AXES` left out while at their defaults."""
        default = SearchSpace()
        unchanged = {k for k in LATER_AXES if getattr(self, k) == getattr(default, k)}
        return self.model_dump(mode="json", exclude=unchanged)

    def axis_of(self, param: str) -> Choice[Any] | None:
        """The axis a trial param comes from (``units_l2`` -> its layer axis), or None if unknown."""
        index = layer_index(param)
        if index is not None:
            return self.layer_axis(index) if self.per_layer_units and index < MAX_HIDDEN_LAYERS else None
        return self.axes().get(param)


def describe_axis(axis: Choice[Any]) -> str:
    """A short human description: ``0.1..0.5 step 0.1``, ``one of [64, 128]``, ``fixed 0.3``."""
    if isinstance(axis, Axis) and axis.ranged:
        extra = " log" if axis.log else (f" step {axis.step}" if axis.step is not None else "")
        return f"{axis.low}..{axis.high}{extra}"
    if axis.fixed:
        return f"fixed {axis.value!r}"
    return f"one of {axis.choices!r}"
