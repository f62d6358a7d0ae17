"""What the sweep loop and a trial exchange: the trial's budget in, how it ended out.

The loop hands each trial a :class:`TrialBudget` (deadline, target) and gets a
:class:`TrialOutcome` back (state, value, failure, fatal error), whether the trial trained alone
(:meth:`mnist_sweep.search.objective.Objective.run_trial`) or as a member of a pack
(:mod:`mnist_sweep.search.packs`). :func:`outcome_of_error` is the one place that turns what a
trial raised into its outcome, recording the reason on the trial.

Example:
    >>> outcome = outcome_of_error(trial, optuna.TrialPruned("pruned after epoch 2"))
    >>> outcome.state
    'pruned'
"""

from __future__ import annotations

import errno
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import optuna

from mnist_sweep.errors import StorageUnavailable

#: Called after each epoch with (trial, epoch index, epochs planned, metrics): live progress.
TrialEpochHook = Callable[[optuna.Trial, int, int, dict[str, float]], None]

#: How a trial ended: finished (``complete``), ``pruned`` (or diverged), crashed (``failed``),
#: not run because the target was reached (``surplus``), stopped by a signal (``interrupted``),
#: or stopped by an error no next trial can escape (``fatal``: the storage gave up, the disk is full).
OutcomeState = Literal["complete", "pruned", "failed", "surplus", "interrupted", "fatal"]


def never() -> bool:
    """The default ``should_stop``: nothing asks the sweep to stop."""
    return False


@dataclass(frozen=True)
class TrialBudget:
    """What the sweep loop allows one trial.

    ``deadline``: the ``time.monotonic()`` at which a running trial stops after its epoch (the
    sweep's ``hard_timeout``), or None. ``target_trials``: a trial that starts after this many
    others are already finished or running is surplus and does not run (exact targets with
    parallel workers), or None (winner confirmation's re-runs count beyond the target).
    """

    deadline: float | None = None
    target_trials: int | None = None

    def expired(self) -> bool:
        """Whether the deadline has passed: no trial starts then."""
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass(frozen=True)
class Failure:
    """A trial that failed (crashed): its number, one-line reason and traceback."""

    trial: int
    reason: str
    traceback: str


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, as the objective returns it to the sweep loop.

    ``value`` is what Optuna is told for a ``complete`` trial; ``error`` what is raised to tell it
    the others (pruned, failed...); ``failure`` the reason and traceback of a ``failed`` trial;
    ``fatal`` the error that must stop the sweep (:class:`~mnist_sweep.errors.StorageUnavailable`,
    or one made of a full disk).
    """

    trial: int
    state: OutcomeState
    value: float | tuple[float, ...] | None = None
    error: BaseException | None = None
    failure: Failure | None = None
    fatal: StorageUnavailable | None = None

    def result(self) -> float | tuple[float, ...]:
        """The value for Optuna, or the trial's exception raised (Optuna's way to hear of a prune or a failure)."""
        if self.error is None:
            assert self.value is not None
            return self.value
        if self.state == "failed":
            raise self.error from None  # its traceback is recorded on the trial already
        raise self.error


class SurplusTrial(Exception):
    """This trial would take the study past its target (parallel workers raced); it does not run."""


class TrialTimeout(Exception):
    """The trial ran longer than the sweep's ``trial_timeout``: it is failed, the worker goes on."""


def outcome_of_error(trial: optuna.Trial, err: BaseException) -> TrialOutcome:
    """How ``trial`` ended, given what stopped it; records the reason (and a crash's traceback) on it.

    A prune is ``pruned``; a :class:`SurplusTrial` ``surplus``; Ctrl-C or a stop request
    ``interrupted``; the storage giving up or a full disk ``fatal``; anything else ``failed``.
    Anything that is neither an ``Exception`` nor a ``KeyboardInterrupt`` (``SystemExit``) is raised.
    """
    if isinstance(err, SurplusTrial):
        trial.set_user_attr("fail_reason", f"SurplusTrial: {err}")
        return TrialOutcome(trial.number, "surplus", error=err)
    if isinstance(err, optuna.TrialPruned):
        return TrialOutcome(trial.number, "pruned", error=err)
    if isinstance(err, KeyboardInterrupt):
        trial.set_user_attr("fail_reason", f"interrupted ({type(err).__name__})")
        return TrialOutcome(trial.number, "interrupted", error=err)
    if isinstance(err, StorageUnavailable):
        return TrialOutcome(trial.number, "fatal", error=err, fatal=err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        full = StorageUnavailable(f"the disk is full ({err.filename or 'writing a trial'}: {err.strerror}); "
                                  "free some space and run the same command to resume")
        return TrialOutcome(trial.number, "fatal", error=err, fatal=full)
    if not isinstance(err, Exception):
        raise err
    reason = f"{type(err).__name__}: {err}"[:500]
    trace = "".join(traceback.format_exception(err))[-4000:]
    trial.set_user_attr("fail_reason", reason)
    trial.set_user_attr("fail_traceback", trace)
    return TrialOutcome(trial.number, "failed", error=err, failure=Failure(trial.number, reason, trace))


def _chain(err: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and len(links) < 10:
        links.append(link)
        link = link.__cause__ or link.__context__
    return links


def storage_error_in(err: BaseException) -> StorageUnavailable | None:
    """The storage's giving up somewhere in ``err``'s chain (from under whatever Optuna raised on top, optuna#5280)."""
    return next((e for e in _chain(err) if isinstance(e, StorageUnavailable)), None)


def failed_by_another_worker(err: Exception, trial: int | None) -> bool:
    """Optuna's ``Cannot tell a FAIL trial``: while this worker waited out the storage, another
    failed its trial (number ``trial``) as stale and queued its config again. Nothing is lost: go on."""
    told = [e for e in _chain(err) if isinstance(e, ValueError) and "Cannot tell a" in str(e)]
    if not told or trial is None:  # Optuna raises it, or its "Should not reach" assertion on top of it
        return False
    print(f"warning: trial {trial} was failed by another worker while this one waited for the storage; "
          "its config runs again", file=sys.stderr, flush=True)
    return True
