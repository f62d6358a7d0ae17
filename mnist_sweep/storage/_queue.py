"""Trials created, failed and queued again exactly once, whatever the connection and the other workers do.

Three writes of Optuna's RDB storage are not safe under a retried call or a concurrent worker:

- **Creating a trial.** A call retried after its commit whose answer was lost makes a second
  trial: a second WAITING copy of an enqueued config (it runs twice and both count), or an
  orphan RUNNING one. Here every new trial carries a *create key* (the system attribute
  :data:`CREATE_KEY_ATTR`), and the creating transaction, which holds the study's row lock
  (Optuna's own, for the trial's number), first looks for a trial of the study with that key and
  returns it if there is one. A retry reuses its key, so it finds what its first attempt made. A
  caller may give the key: :func:`enqueue_once` queues a config under a key of its own
  (``confirm:<trial>:<run>``, ``enqueue:<hash>``), so workers doing the same at the same time
  queue it once.
- **Failing a dead worker's trial.** Optuna's reaper sets FAIL and records no reason; a reason
  written first, then the state, can land on a trial that finished in between. :func:`fail_running`
  does both in one transaction, only while the trial is RUNNING.
- **Queueing it again.** Optuna's ``RetryHeartbeatStaleTrialCallback`` copies every attribute of
  the dead trial (its ``fail_reason``, its worker, its create key), and runs after the failing
  write, so a worker stopped in between loses the config. :func:`fail_and_requeue` fails the trial
  and queues its config in one transaction, with the attributes that say what the trial is for
  (:data:`KEPT_ON_REQUEUE`) and the retry history, honouring ``heartbeat.max_retries``.

Example:
    >>> enqueue_once(study, "confirm:12:1", {"units": 128, "dropout": 0.2}, {"confirms": 12})
    57
    >>> enqueue_once(study, "confirm:12:1", {"units": 128, "dropout": 0.2}, {"confirms": 12})  # again
    57
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.storages._rdb import models as _models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import insert, select, update

#: The system attribute holding a trial's create key.
CREATE_KEY_ATTR = "mnist_sweep:create_key"

#: User attributes a re-queued trial keeps: what it is for (a confirmation re-run names its original).
KEPT_ON_REQUEUE = ("confirms",)


def create_key(template: FrozenTrial | None) -> str:
    """The create key of a trial made from ``template``: its own, else a new one (fixed before any retry)."""
    return (template.system_attrs.get(CREATE_KEY_ATTR) if template is not None else None) or uuid.uuid4().hex


def create_trial(rdb: optuna.storages.RDBStorage, study_id: int, template: FrozenTrial | None, key: str) -> int:
    """Optuna's ``create_new_trial``, keyed: the id of the study's trial with create key ``key`` if one
    exists, else of a new trial made from ``template`` (RUNNING if None) with that key."""
    if template is not None:
        template = copy.deepcopy(template)
        template.system_attrs[CREATE_KEY_ATTR] = key
    with _create_scoped_session(rdb.scoped_session) as session:
        _models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)  # serialises creators
        found = _trial_with_key(session, study_id, key)
        if found is not None:
            return found
        trial = rdb._get_prepared_new_trial(study_id, template, session)
        if template is None:
            rdb._set_trial_attr_without_commit(session, _models.TrialSystemAttributeModel, trial.trial_id,
                                               CREATE_KEY_ATTR, key)
        session.flush()
        return trial.trial_id


def _trial_with_key(session: Any, study_id: int, key: str) -> int | None:
    attrs, trials = _models.TrialSystemAttributeModel, _models.TrialModel
    row = session.execute(
        select(attrs.trial_id).join(trials, trials.trial_id == attrs.trial_id)
        .where(trials.study_id == study_id, attrs.key == CREATE_KEY_ATTR, attrs.value_json == json.dumps(key))
        .limit(1)).first()
    return None if row is None else int(row[0])


def enqueue_once(study: optuna.Study, key: str, params: Mapping[str, Any],
                 user_attrs: Mapping[str, Any] | None = None) -> int:
    """``study.enqueue_trial(params, user_attrs=...)`` made at most once for ``key`` in the study (by any
    worker, retried or not); returns the trial's number (the earlier one's if it exists)."""
    trial = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=dict(user_attrs or {}),
                                      system_attrs={"fixed_params": dict(params), CREATE_KEY_ATTR: key})
    storage = study._storage
    if not _keyed(storage):  # an in-memory study lives in one process: look, then add
        made = [t for t in storage.get_all_trials(study._study_id, deepcopy=False)
                if t.system_attrs.get(CREATE_KEY_ATTR) == key]
        if made:
            return made[0].number
    return storage.get_trial(storage.create_new_trial(study._study_id, template_trial=trial)).number


def _keyed(storage: Any) -> bool:
    """Whether ``storage`` (or the RDB storage under Optuna's cache wrapper) creates trials by key."""
    from mnist_sweep.storage._optuna_internals import ClaimingRDBStorage

    return isinstance(getattr(storage, "_backend", storage), ClaimingRDBStorage)


def config_key(params: Mapping[str, Any]) -> str:
    """A key for a config, the same for the same params in any order."""
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True, default=str).encode()).hexdigest()[:16]


def fail_running(rdb: optuna.storages.RDBStorage, trial_id: int, reason: str) -> bool:
    """FAIL the trial and record ``fail_reason``, in one transaction, only if it is RUNNING; True when
    this call did it (False: it had finished, or another worker failed it first)."""
    trials = _models.TrialModel.__table__
    with _create_scoped_session(rdb.scoped_session) as session:
        if session.execute(update(trials).where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
                           .values(state=TrialState.FAIL, datetime_complete=_utc_now())).rowcount != 1:
            return False
        _record_reason(session, trial_id, reason)
    return True


def fail_and_requeue(rdb: optuna.storages.RDBStorage, study_id: int, trial_id: int, reason: str,
                     max_retries: int | None) -> bool:
    """:func:`fail_running` for a trial whose worker died, and in the same transaction its config queued
    again (:func:`requeue_template`): both happen, or neither. True when this call failed it."""
    trials = _models.TrialModel.__table__
    with _create_scoped_session(rdb.scoped_session) as session:
        _models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        model = _models.TrialModel.find_or_raise_by_id(trial_id, session)
        if model.state != TrialState.RUNNING:
            return False
        dead = rdb._build_frozen_trial_from_trial_model(model)
        if session.execute(update(trials).where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
                           .values(state=TrialState.FAIL, datetime_complete=_utc_now())).rowcount != 1:
            return False
        _record_reason(session, trial_id, reason)
        template = requeue_template(dead, max_retries)
        if template is not None and _trial_with_key(session, study_id, template.system_attrs[CREATE_KEY_ATTR]) is None:
            rdb._get_prepared_new_trial(study_id, template, session)
    return True


def requeue_template(trial: FrozenTrial, max_retries: int | None) -> FrozenTrial | None:
    """The WAITING trial that runs the config of ``trial`` again (its worker died), keyed
    ``requeue:<number>``; None once the config has been retried ``max_retries`` times."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if max_retries is not None and len(history) > max_retries:
        return None
    params = trial.system_attrs.get("fixed_params") or trial.params
    system_attrs = {"fixed_params": dict(params), "failed_trial": history[0], "retry_history": history,
                    CREATE_KEY_ATTR: f"requeue:{trial.number}"}
    user_attrs = {k: trial.user_attrs[k] for k in KEPT_ON_REQUEUE if k in trial.user_attrs}
    return optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=user_attrs, system_attrs=system_attrs)


def _record_reason(session: Any, trial_id: int, reason: str) -> None:
    attrs = _models.TrialUserAttributeModel.__table__
    session.execute(attrs.delete().where(attrs.c.trial_id == trial_id, attrs.c.key == "fail_reason"))
    session.execute(insert(attrs).values(trial_id=trial_id, key="fail_reason", value_json=json.dumps(reason)))


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
