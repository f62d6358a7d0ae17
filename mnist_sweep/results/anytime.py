"""Anytime quality: the best validation accuracy a study had reached at each moment of wall time.

A sweep can be stopped whenever its user likes and still leaves its best trial so far; this
curve says what a stop at any moment would have left. Each epoch a trial reported is placed on
the wall clock: the trial's start, plus its set-up time before ``fit`` (the trial's duration
minus its epochs' seconds), plus the seconds of its epochs up to that one. Trials of parallel
workers overlap in time; their epochs are merged in time order. The report draws the curve and
``bench`` reads the time to a validation accuracy threshold from it.

Example:
    >>> curve = best_so_far(study.get_trials(deepcopy=False))
    >>> first_reach(curve, 0.98)   # seconds after the first trial started, or None
    95.2
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from optuna.trial import FrozenTrial


class AnytimePoint(NamedTuple):
    """A moment the study's best validation accuracy went up."""

    seconds: float  # since the curve's origin
    value: float  # the best validation accuracy from then on
    trial: int  # the trial and epoch that reached it
    epoch: int


@dataclass(frozen=True)
class Crossing:
    """When a sequential study first reached a validation accuracy threshold."""

    epochs: int | None  # epochs trained by then, over all trials
    seconds: float | None  # wall time since the study's first trial started
    trials: int


def epoch_times(trial: FrozenTrial, start: datetime.datetime) -> list[tuple[float, int, float]]:
    """(seconds since ``start``, epoch, validation accuracy) for each epoch ``trial`` reported.

    A trial without ``epoch_seconds`` (interrupted mid-``fit``: its epochs' times were never
    stored) cannot be placed and gives no point.
    """
    seconds = trial.user_attrs.get("epoch_seconds") or []
    if not seconds or trial.datetime_start is None:
        return []
    offset = (trial.datetime_start - start).total_seconds()
    if trial.duration is not None:
        offset += max(0.0, trial.duration.total_seconds() - sum(seconds))
    # a multi-objective trial reports no intermediate values (Optuna refuses them): its history has the epochs
    history = (trial.user_attrs.get("history") or {}).get("val_accuracy") or []
    epochs = sorted(trial.intermediate_values.items()) or list(enumerate(history, start=1))
    return [(offset + sum(seconds[:step]), step, value) for step, value in epochs]


def best_so_far(trials: Sequence[FrozenTrial], origin: datetime.datetime | None = None) -> list[AnytimePoint]:
    """Every improvement of the best per-epoch validation accuracy, in time order.

    Args:
        trials: trials with ``epoch_seconds`` user attributes (others are left out).
        origin: time zero; default: the earliest start among ``trials``.
    """
    start = origin if origin is not None else curve_origin(trials)
    if start is None:
        return []
    points = sorted((when, value, t.number, epoch) for t in trials for when, epoch, value in epoch_times(t, start))
    curve: list[AnytimePoint] = []
    for when, value, number, epoch in points:
        if not curve or value > curve[-1].value:
            curve.append(AnytimePoint(when, value, number, epoch))
    return curve


def curve_origin(trials: Sequence[FrozenTrial]) -> datetime.datetime | None:
    """The earliest start among ``trials``: the default time zero of :func:`best_so_far`."""
    return min((t.datetime_start for t in trials if t.datetime_start is not None), default=None)


def first_reach(curve: Sequence[AnytimePoint], threshold: float) -> float | None:
    """Seconds until ``curve`` first reached ``threshold``, or None if it never did."""
    return next((p.seconds for p in curve if p.value >= threshold), None)


def first_crossing(trials: Sequence[FrozenTrial], threshold: float) -> Crossing:
    """Epochs and seconds until a sequential study's per-epoch validation accuracy first reached ``threshold``.

    Epochs are counted over all trials in start order, so a pruner that stops weak trials early
    shows up as fewer epochs to the threshold.
    """
    placed = sorted((t for t in trials if t.datetime_start is not None), key=lambda t: t.datetime_start)
    if not placed:
        return Crossing(None, None, 0)
    start, epochs = placed[0].datetime_start, 0
    for count, trial in enumerate(placed, start=1):
        points = epoch_times(trial, start)
        hit = next((p for p in points if p[2] >= threshold), None)
        if hit is not None:
            return Crossing(epochs + hit[1], hit[0], count)
        epochs += len(points)
    return Crossing(None, None, len(placed))
