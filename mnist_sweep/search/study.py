"""Studies: create or resume a sweep's study, load stored ones, summarise a storage's studies.

A sweep's target is a total held in the storage, not a per-call ``n_trials``: ``trials: 20``
means the study should end with 20 COMPLETE + PRUNED trials. Running the sweep again resumes
it and runs only what is missing; FAILed trials (crashes, interrupts, dead workers) do not count,
so they are replaced. Several workers can share a study (Optuna's own distributed mode: one RDB
storage); each checks the count in the storage before every trial.

The study keeps the sweep (``sweep``), its fingerprint (search space, data, direction) and its
provenance in its user attributes (with each data split's sha256, image and class counts);
resuming it with a different fingerprint, or on data whose content changed, is refused.

The sweep loop that fills a study is :func:`mnist_sweep.search.loop.run_sweep`.

Example:
    >>> load_study("sqlite:///studies/mnist_sweep.db", "quick").best_value
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from mnist_sweep._base.paths import storage_url
from mnist_sweep._base.provenance import check_same_data
from mnist_sweep.errors import InputError
from mnist_sweep.search.samplers import make_pruner, make_sampler
from mnist_sweep.storage._queue import config_key, enqueue_once
from mnist_sweep.storage.rdb import open_storage, redact
from mnist_sweep.sweep.config import SweepConfig
from mnist_sweep.sweep.goals import accuracy_of, best_trial, directions

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


#: The study attribute ``final`` writes: the final model's test accuracy, members and date (the
#: report's accuracy ladder shows it).
FINAL_ATTR = "final_test"


def open_study(
    sweep: SweepConfig, storage: str | optuna.storages.BaseStorage, study_name: str | None = None, worker: int = 0,
    provenance: Mapping[str, Any] | None = None, data_signature: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Create the sweep's study (enqueueing its ``enqueue:`` trials, recording ``provenance`` and the
    data's image size and class names) or resume it.

    ``provenance`` (:func:`mnist_sweep._base.provenance.collect`) identifies the data by content: each
    split's sha256, image count and class counts. A study is resumed only on the data it recorded.

    Raises:
        InputError: the stored study was made from a different search space or data (another
            image size or other classes too, or other images: one line naming what changed);
            nothing was written.
    """
    name = study_name or sweep.name
    sampler, pruner = make_sampler(sweep, worker), make_pruner(sweep)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions(sweep.objectives),
                                    sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
        _check_resumable(study, sweep)
        stored = study.user_attrs.get("data_signature")
        if data_signature is not None and stored is not None and stored != dict(data_signature):
            raise InputError(f"study '{study.study_name}' was made on other data ({_shape(stored)}, now "
                             f"{_shape(data_signature)}); use --study NEW or --new-study") from None
        if provenance is not None:
            check_same_data(study.user_attrs.get("provenance"), provenance, study.study_name,
                            "resuming would mix trials trained on other images: restore the data, or use "
                            "--study NEW or --new-study")
        return study
    study.set_user_attr("sweep_fingerprint", sweep.fingerprint())
    study.set_user_attr("sweep", sweep.model_dump(mode="json"))
    if data_signature is not None:
        study.set_user_attr("data_signature", dict(data_signature))
    if provenance is not None:
        study.set_user_attr("provenance", dict(provenance))
    for params in sweep.enqueue:  # keyed by config: workers opening the study together queue each once
        enqueue_once(study, f"enqueue:{config_key(params)}", params)
    return study


def _shape(signature: Mapping[str, Any]) -> str:
    names = list(signature.get("class_names", []))
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{signature.get('side')} x {signature.get('side')} images, classes {shown}"


def _check_resumable(study: optuna.Study, sweep: SweepConfig) -> None:
    stored_directions = [d.name.lower() for d in study.directions]
    if stored_directions != directions(sweep.objectives):
        raise InputError(f"study '{study.study_name}': stored directions are {stored_directions}, the sweep's "
                         f"objectives {sweep.objectives} want {directions(sweep.objectives)}; "
                         "use --study NEW or --new-study")
    stored = study.user_attrs.get("sweep_fingerprint")
    if stored is not None and stored != sweep.fingerprint():
        old = study.user_attrs.get("sweep", {})
        changed = [k for k in ("space", "data") if old.get(k) != sweep.model_dump(mode="json")[k]]
        raise InputError(
            f"study '{study.study_name}' was made from a different sweep ({' and '.join(changed) or 'space'} "
            "changed); resuming would mix incomparable trials: use --study NEW or --new-study"
        )


def count_states(study: optuna.Study) -> Counter[str]:
    """Number of trials per state name, read from the storage."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def list_studies(storage: str | None = None) -> list[optuna.study.StudySummary]:
    """Summaries (name, trial count, best trial) of the studies in a storage, creating nothing.

    ``storage`` defaults to :func:`mnist_sweep._base.paths.storage_url`.

    Example:
        >>> [s.study_name for s in list_studies()]
        ['quick', 'tutorial']

    Raises:
        InputError: the storage does not exist or cannot be opened.
    """
    rdb = open_storage(storage_url(storage), create=False)
    return sorted(optuna.get_all_study_summaries(rdb, include_best_trial=True), key=lambda s: s.study_name)


def load_study(storage: str | None = None, name: str | None = None) -> optuna.Study:
    """Load a stored study for reading (report, dashboard, export), creating nothing.

    ``storage`` defaults to :func:`mnist_sweep._base.paths.storage_url`; ``name`` may be left out when
    the storage holds exactly one study.

    Example:
        >>> load_study("sqlite:///studies/mnist_sweep.db", "quick").best_value

    Raises:
        InputError: the storage does not exist or cannot be opened, it holds no studies, or ``name``
            is missing (several studies) or unknown; the message lists the studies there are.
    """
    url = storage_url(storage)
    rdb = open_storage(url, create=False)
    names = sorted(optuna.get_all_study_names(rdb))
    if not names:
        raise InputError(f"{redact(url)}: no studies yet (start one with: python -m mnist_sweep run quick)")
    if name is None:
        if len(names) > 1:
            raise InputError(f"{redact(url)} holds {len(names)} studies, pick one with --study: {', '.join(names)}")
        name = names[0]
    elif name not in names:
        raise InputError(f"no study '{name}' in {redact(url)}; available: {', '.join(names)}")
    return optuna.load_study(study_name=name, storage=rdb)


@dataclass(frozen=True)
class StudySummary:
    """What ``studies`` prints of one stored study (unlike Optuna's summary, it counts every state).

    ``states``: trials per state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``...);
    ``best_trial``, ``best_accuracy``: the COMPLETE trial with the best validation accuracy, or
    None; ``directions``: ``maximize``/``minimize`` per objective.
    """

    study_name: str
    states: dict[str, int]
    best_trial: int | None
    best_accuracy: float | None
    directions: list[str]


def study_summaries(storage: str | None = None) -> list[StudySummary]:
    """Each study in a storage, by name, with its trials per state and its best trial; creating nothing.

    ``storage`` defaults to :func:`mnist_sweep._base.paths.storage_url`.

    Example:
        >>> [(s.study_name, s.states["COMPLETE"], s.best_accuracy) for s in study_summaries()]
        [('quick', 6, 0.9432)]

    Raises:
        InputError: the storage does not exist or cannot be opened.
    """
    rdb = open_storage(storage_url(storage), create=False)
    summaries = []
    for name in sorted(optuna.get_all_study_names(rdb)):
        study = optuna.load_study(study_name=name, storage=rdb)
        best = best_trial(study)
        summaries.append(StudySummary(
            study_name=name, states=dict(count_states(study)), best_trial=best.number if best else None,
            best_accuracy=accuracy_of(best) if best else None, directions=[d.name.lower() for d in study.directions]))
    return summaries


