"""A search space as a trial's params: asked of an Optuna trial (:func:`suggest_params`) or read
from a space whose every axis is fixed (:func:`fixed_params`), named alike (``units_l0``, ...)."""

from __future__ import annotations

from typing import Any

import optuna

from mnist_sweep.errors import InputError
from mnist_sweep.sweep.space import (
    CNN_AXES,
    MLP_AXES,
    Axis,
    Choice,
    SearchSpace,
    describe_axis,
    is_int_axis,
    layer_units_name,
)


def fixed_params(space: SearchSpace, filename: str = "config") -> dict[str, Any]:
    """The trial params a space of fixed axes describes, named as a trial's (``units_l0``, ...).

    An axis counts as fixed when it is a ``value``, a single choice, or a range with ``low == high``.

    Raises:
        InputError: one line per axis that is not fixed, naming ``filename`` and the axis.
    """

    values: dict[str, Any] = {}
    problems = []
    for name, axis in space.axes().items():
        if name == "units" and space.layer_units is not None:
            continue  # each layer's width is given
        single = _single_value(axis)
        if single is None:
            problems.append(f"{filename}: space.{name}: not fixed ({describe_axis(axis)}); 'train' needs "
                            "one value per axis (export a study's best trial with: python -m mnist_sweep export)")
        else:
            values[name] = single[0]
    if problems:
        raise InputError(problems)
    if space.per_layer_units and values.get("architecture", "mlp") == "mlp":
        for i in range(int(values["hidden_layers"])):
            values[layer_units_name(i)] = _single_value(space.layer_axis(i))[0]  # fixed: checked above
    return suggest_params(optuna.trial.FixedTrial(values), space)


def _single_value(axis: Choice[Any]) -> tuple[Any] | None:
    if axis.fixed:
        return (axis.value,)
    if axis.choices is not None and len(axis.choices) == 1:
        return (axis.choices[0],)
    if isinstance(axis, Axis) and axis.ranged and axis.low == axis.high:
        return (axis.low,)
    return None


def suggest_params(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Ask ``trial`` for one value per axis; fixed axes are one-choice categoricals so they are recorded.

    The architecture is asked first, then only its family's axes (a CNN trial has no ``units``, an MLP
    trial no ``filters``); a space of MLPs only (the default) asks no ``architecture`` at all, as before
    CNNs existed, so its studies resume unchanged."""
    params: dict[str, Any] = {}
    mlp_only = space.architecture.fixed and space.architecture.value == "mlp"
    architecture = "mlp" if mlp_only else _suggest(trial, "architecture", space.architecture)
    if not mlp_only:
        params["architecture"] = architecture
    other_family = set(CNN_AXES) if architecture == "mlp" else set(MLP_AXES)
    for name, axis in space.axes().items():
        if name == "architecture" or name in other_family or (name == "units" and space.per_layer_units):
            continue
        params[name] = _suggest(trial, name, axis)
    if space.per_layer_units and architecture == "mlp":
        for i in range(int(params["hidden_layers"])):
            params[layer_units_name(i)] = _suggest(trial, layer_units_name(i), space.layer_axis(i))
    return params


def _suggest(trial: optuna.Trial, name: str, axis: Any) -> Any:
    if isinstance(axis, Axis) and axis.ranged:
        if is_int_axis(name):
            return trial.suggest_int(name, axis.low, axis.high, step=axis.step or 1, log=axis.log)
        return trial.suggest_float(name, axis.low, axis.high, step=axis.step, log=axis.log)
    return trial.suggest_categorical(name, axis.choices if axis.choices is not None else [axis.value])
