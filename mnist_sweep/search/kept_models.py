"""Trained models kept per trial: the best K of a study, as Optuna artifacts, none retrained to be used.

When a trial finishes COMPLETE among the ``keep.models`` best of its study by validation
accuracy, the weights of its best validation epoch are saved as a ``.keras`` file (without
optimizer state: a model to use, not to resume) and uploaded as an Optuna artifact of the trial,
into the study's database when it is a server (PostgreSQL, MySQL: every machine that reaches the
study reaches its models), else into a folder beside its SQLite file
(:mod:`mnist_sweep.storage.artifacts`); optuna-dashboard lists it on the trial's page. With
``keep.pareto`` (the default) the models on the Pareto fronts of validation accuracy against
parameter count and against latency are kept too, so the best model within a size or latency
budget is at hand. A model that leaves both has its file deleted, so the store holds at most K
models plus the fronts (a handful: each front member is smaller or faster than every more accurate
one). PRUNED, FAILed and interrupted trials keep nothing, and every file is written atomically, so
nothing is ever half-written.

Which trials hold a model is the study's user attribute ``kept_models`` (trial number ->
artifact id, validation accuracy, epoch, costs), the registry. Workers finish together (``--jobs``,
packed trials), so it changes only by compare-and-set
(:func:`~mnist_sweep.storage._optuna_internals.compare_and_set_study_user_attr`): read it, work out
the models to retain with the new one, write that only if the registry is still what was read,
else read again. A trial first records its artifact id (its user attribute ``kept_model``), then
writes its file, then registers it; a file is deleted only after the committed registry no longer
names it (displaced, or never admitted). A file no registry names whose trial has finished is left
over by a crash: the next registration removes it. So whatever stops a worker, the registry names
only files that exist, and at most the files of trials still running are unnamed. Finished trials
cannot be changed in Optuna, so a displaced trial's ``kept_model`` and artifact entries stay on it
while its file is gone; the registry is what counts.

Example:
    >>> [(k.trial, round(k.value, 4)) for k in kept_models(study)]
    [(12, 0.9871), (40, 0.9866), (3, 0.9859)]
    >>> model = load_kept_model(study, 12)
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from mnist_sweep.errors import InputError
from mnist_sweep.model.saving import load_model
from mnist_sweep.storage._optuna_internals import compare_and_set_study_user_attr, study_user_attr_json
from mnist_sweep.storage.artifacts import (
    DIR_ATTR,
    FolderArtifactStore,
    artifact_folder,
    database_store,
    in_database,
    study_artifact_store,
)

REGISTRY_ATTR = "kept_models"


@dataclass(frozen=True)
class KeptModel:
    """One kept model: its trial, artifact id, validation accuracy, the epoch its weights are from and
    its costs (``n_params``, ``latency_ms_batch1``; absent in studies kept before they were recorded)."""

    trial: int
    artifact_id: str
    value: float
    epoch: int
    n_params: int | None = None
    latency_ms_batch1: float | None = None

    def entry(self) -> dict[str, Any]:
        """The model's entry in the study's registry."""
        costs = {k: getattr(self, k) for k in COST_KEYS if getattr(self, k) is not None}
        return {"artifact_id": self.artifact_id, "value": self.value, "epoch": self.epoch, **costs}


COST_KEYS = ("n_params", "latency_ms_batch1")


class StudiesArtifactStore:
    """The artifact folders of several SQLite studies as one store, for optuna-dashboard, which takes one
    store per storage: an artifact id (a UUID) is looked up in each folder."""

    def __init__(self, folders: list[Path]) -> None:
        self.stores = [FolderArtifactStore(folder) for folder in folders] or [FolderArtifactStore("studies/artifacts")]

    def _find(self, artifact_id: str) -> FolderArtifactStore:
        for store in self.stores:
            if (store.base / Path(artifact_id).name).is_file():
                return store
        raise ArtifactNotFound(f"no artifact {artifact_id}")

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._find(artifact_id).open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._find(artifact_id).remove(artifact_id)


def storage_artifact_store(storage: optuna.storages.BaseStorage) -> Any:
    """One store over the kept models of every study in ``storage``: the database's own table for a
    server database, else the artifact folders of its studies that exist."""
    if in_database(storage):
        return database_store(storage)
    folders = [artifact_folder(storage, s.study_name, s.user_attrs.get(DIR_ATTR))
               for s in optuna.get_all_study_summaries(storage)]
    return StudiesArtifactStore([folder for folder in folders if folder.is_dir()])


def artifact_dir(study: optuna.Study) -> Path:
    """An SQLite study's artifact folder (:func:`mnist_sweep.storage.artifacts.artifact_folder`)."""
    return artifact_folder(study._storage, study.study_name, study.user_attrs.get(DIR_ATTR))


def kept_models(study: optuna.Study) -> list[KeptModel]:
    """The study's kept models, best validation accuracy first; a FAILed trial's never (one failed after
    it kept its model, by a stop or by another worker, until the next registration drops it)."""
    failed = _failed(study)
    return [m for m in _models_in(study.user_attrs.get(REGISTRY_ATTR) or {}) if m.trial not in failed]


def _failed(study: optuna.Study) -> set[int]:
    return {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}


def _models_in(registry: dict[str, Any]) -> list[KeptModel]:
    kept = [KeptModel(int(n), e["artifact_id"], float(e["value"]), int(e["epoch"]),
                      *(e.get(key) for key in COST_KEYS)) for n, e in registry.items()]
    return sorted(kept, key=lambda k: (-k.value, k.trial))


def retained(models: list[KeptModel], k: int, pareto: bool) -> list[KeptModel]:
    """The models to keep, best first: the ``k`` most accurate, and with ``pareto`` those on the front of
    accuracy against each cost (no other is at least as accurate and cheaper). A model left off is
    beaten on both by one kept, so the fronts of every COMPLETE trial stay kept."""
    ranked = sorted(models, key=lambda m: (-m.value, m.trial))
    chosen = {m.trial for m in ranked[:k]}
    if pareto and k > 0:
        for cost in COST_KEYS:
            best = float("-inf")
            costed = [m for m in ranked if getattr(m, cost) is not None]
            for m in sorted(costed, key=lambda m: (getattr(m, cost), -m.value, m.trial)):
                if m.value > best:
                    chosen.add(m.trial)
                    best = m.value
    return [m for m in ranked if m.trial in chosen]


def keep_model(trial: optuna.Trial, model: Any, weights: list[Any], epoch: int, value: float, k: int,
               costs: dict[str, Any] | None = None, pareto: bool = False) -> str | None:
    """Keep ``model`` with ``weights`` for ``trial`` if it ranks among the study's best ``k`` (or, with
    ``pareto``, on a front of accuracy against its ``costs``: ``n_params``, ``latency_ms_batch1``);
    returns the artifact id, or None when it is not kept. Models no longer retained are deleted.
    Call it while ``trial`` runs (before it is told finished): other workers treat the unregistered
    file of a finished trial as a crash's leftover."""
    return keep_file(trial, lambda path: _without_optimizer(model, weights).save(path), epoch, value, k,
                     costs=costs, pareto=pareto)


def keep_file(trial: optuna.Trial, save: Callable[[Path], None], epoch: int, value: float, k: int,
              costs: dict[str, Any] | None = None, pareto: bool = False) -> str | None:
    """:func:`keep_model` with the file made by ``save(path)`` (a ``.keras`` path): see the module
    docstring for the order of the steps that keeps the registry and the folder in agreement."""
    study = trial.study
    costs = {key: (costs or {}).get(key) for key in COST_KEYS}
    candidate = KeptModel(trial.number, "", value, epoch, **costs)
    kept = kept_models(study)
    if k <= 0 or candidate not in retained([*kept, candidate], k, pareto):
        return None  # cannot rank now, nor later: the registry only ever gets better

    def own(artifact_id: str) -> None:  # the owner is on record before the file exists
        trial.set_user_attr("kept_model", {"artifact_id": artifact_id, "epoch": epoch})

    store = study_artifact_store(study, before_write=own)
    with tempfile.TemporaryDirectory(prefix="mnist-sweep-model-") as tmp:
        path = Path(tmp) / f"trial-{trial.number}.keras"
        save(path)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    mine = KeptModel(trial.number, artifact_id, value, epoch, **costs)
    listed = store.listing()  # the files, then the trials, then the registry: see _leftovers
    unnamed = set(listed.values()) - {m.artifact_id for m in kept} - {artifact_id}
    trials = study.get_trials(deepcopy=False) if unnamed else []  # only to tell a crash's leftovers
    before, after = _register(study, mine, k, pareto)
    named = {m.artifact_id for m in after}
    dropped = [m.artifact_id for m in [*before, mine] if m.artifact_id not in named]
    for name in [*dropped, *_leftovers(listed, trials, named)]:
        store.discard(name)  # no registry names it any more (or ever did)
    return artifact_id if artifact_id in named else None


def _register(study: optuna.Study, model: KeptModel, k: int, pareto: bool) -> tuple[list[KeptModel], list[KeptModel]]:
    """Add ``model`` to the study's registry and drop those it displaces and those of trials that have
    FAILed since they kept theirs, as one compare-and-set, read again and retried while other workers
    change it first; the registry before and after."""
    while True:
        raw = study_user_attr_json(study, REGISTRY_ATTR)
        registry = json.loads(raw) if raw else {}
        before, failed = _models_in(registry or {}), _failed(study)
        after = retained([*(m for m in before if m.trial != model.trial and m.trial not in failed), model], k, pareto)
        updated = {str(m.trial): m.entry() for m in after}
        if updated == registry or compare_and_set_study_user_attr(study, REGISTRY_ATTR, raw, updated):
            return before, after


def _leftovers(listed: dict[str, str], trials: list[optuna.trial.FrozenTrial], named: set[str]) -> list[str]:
    """The files of ``listed`` that a crash left over: no registry names them, and the trial that
    wrote them has finished. Safe because a trial records its file before writing it, registers it
    before it finishes, and the folder was listed before ``trials`` were read, and those before the
    registry (``named``): a finished owner registered whatever it was going to first. A file no
    trial of this study owns (another study's, sharing the folder) is left alone."""
    owners = {t.user_attrs["kept_model"].get("artifact_id"): t for t in trials
              if isinstance(t.user_attrs.get("kept_model"), dict)}
    return [name for name, artifact_id in listed.items()
            if artifact_id not in named and artifact_id in owners and owners[artifact_id].state.is_finished()]


def load_kept_model(study: optuna.Study, trial_number: int) -> Any:
    """The kept model of trial ``trial_number``, loaded like any saved model.

    Raises:
        KeyError: that trial has no kept model.
        InputError: the registry names its file, but the file is gone (one line: study, trial, file).
    """

    entry = {m.trial: m for m in kept_models(study)}[trial_number]
    store = study_artifact_store(study)
    with tempfile.TemporaryDirectory(prefix="mnist-sweep-model-") as tmp:
        path = Path(tmp) / f"trial-{trial_number}.keras"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=entry.artifact_id)
        except ArtifactNotFound:
            raise InputError(f"study '{study.study_name}': the kept model of trial {trial_number} is missing: "
                             f"{store.where} holds no {entry.artifact_id} (deleted, or on another machine); "
                             "restore it, or run a new study") from None
        return load_model(path)


def _without_optimizer(model: Any, weights: list[Any]) -> Any:
    """A copy of ``model``'s network with ``weights``, uncompiled: its file holds no optimizer state
    (half or less of the size) and loads anywhere ``predict`` runs."""
    copy = type(model).from_config(model.get_config())  # clone_model would compile it again
    copy.set_weights(weights)
    return copy
