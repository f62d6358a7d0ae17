"""Every use of Optuna's private parts, in one place. Checked against Optuna 5.0.0.

Optuna's public API cannot: claim a queued trial atomically on SQLite, find RUNNING trials
that never sent a heartbeat, reach a trial's storage row by id, name the storage calls that
its cache wrapper makes on the RDB storage (which a retrying storage must wrap), or change a study
attribute only if it still holds what was read (a compare-and-set). What we need of its
internals (``optuna.storages._rdb.models``, ``Study._storage``, ``Study._study_id``,
``Trial._trial_id``, the cache wrapper's ``_backend``) is wrapped here; a new Optuna release is
checked by reading this module and :mod:`mnist_sweep.storage._queue` (trials created, failed and
queued again exactly once) and running ``tests/storage/test_optuna_internals.py``.

Optuna 5 keeps trial times in UTC (the ``datetime_start`` column holds naive UTC, read through
``TrialModel._datetime_start_utc``); Optuna 4 kept local time, so 4.x is not supported
(``pyproject.toml`` asks for ``optuna>=5.0``).

Example:
    >>> storage = ClaimingRDBStorage("sqlite:///studies/mnist_sweep.db")
    >>> running_without_heartbeat(storage, study_id(study), started_before=utc_now())
    []
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Sequence
from typing import Any

import optuna
import sqlalchemy.exc
import sqlalchemy.orm
from optuna.storages._heartbeat import (
    BaseHeartbeat,  # noqa: F401 - re-exported: the heartbeat half of the storage API
    get_heartbeat_thread,
)
from optuna.storages._rdb import models as _models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import insert, select, update

from mnist_sweep.storage import _queue

#: The RDB storage's private methods that Optuna's ``_CachedStorage`` (the wrapper every RDB-backed
#: study talks through) and ``fail_stale_trials`` call directly, besides the public storage API.
PRIVATE_STORAGE_CALLS = ("_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials",
                         "_set_trial_param")

#: Optuna releases this module was checked against (the oldest is the floor in pyproject.toml).
CHECKED_OPTUNA = ("5.0.0",)


def utc_now() -> datetime.datetime:
    """Now as Optuna 5's RDB columns store it: naive UTC."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class ClaimingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose WAITING -> RUNNING move is one conditional ``UPDATE``.

    Why: a worker takes an enqueued (WAITING) trial through ``set_trial_state_values(RUNNING)``,
    which Optuna implements as ``SELECT ... FOR UPDATE`` then a write. SQLite ignores ``FOR
    UPDATE`` and Python's sqlite3 runs that read outside the write transaction, so two workers
    popping at the same moment both see WAITING and both run the trial; the slower one then dies
    with "Cannot tell a COMPLETE trial". ``UPDATE ... WHERE state = 'WAITING'`` is a
    compare-and-set on every database: one claimer changes the row, the others change none and
    get False, as Optuna's contract says. The start time is written in UTC, as Optuna 5 does.
    """

    #: ``heartbeat.max_retries``: how often a dead worker's config is queued again (None: always).
    requeue_retries: int | None = None

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None,
                          key: str | None = None) -> FrozenTrial:
        """Optuna's, keyed (:func:`mnist_sweep.storage._queue.create_trial`): a retry finds what it made."""
        made = _queue.create_trial(self, study_id, template_trial, key or _queue.create_key(template_trial))
        return self.get_trial(made)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's reaper (``fail_stale_trials``) fails what this returns, with no reason, and queues
        the config again in a second write: the storage fails them itself, with the reason and the
        re-queue in one transaction, and leaves the reaper nothing."""
        ClaimingRDBStorage.reap(self, study_id)  # under the caller's retry, if any
        return []

    def reap(self, study_id: int) -> list[int]:
        """Fail the study's trials of dead workers (a heartbeat older than the grace period, or none
        since a start longer ago than it), each with its reason, its config queued again; their ids."""
        if self.heartbeat_interval is None:
            return []
        grace = self.grace_period or 2 * self.heartbeat_interval
        dead = [(tid, f"worker stopped sending heartbeats (none for over {grace} s)")
                for tid in optuna.storages.RDBStorage._get_stale_trial_ids(self, study_id)]
        dead += [(tid, "worker died before its first heartbeat") for tid in running_without_heartbeat(
            self, study_id, utc_now() - datetime.timedelta(seconds=grace))]
        return [tid for tid, reason in dead
                if _queue.fail_and_requeue(self, study_id, tid, reason, self.requeue_retries)]

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        trials = _models.TrialModel.__table__  # Optuna's table, with its column types (enum, datetime)
        claim = (update(trials)
                 .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                 .values(state=TrialState.RUNNING, datetime_start=utc_now()))
        with self.engine.begin() as connection:
            if connection.execute(claim).rowcount == 1:
                return True
        self.check_trial_is_updatable(trial_id, self.get_trial(trial_id).state)  # finished: raises
        return False  # another worker took it


def running_without_heartbeat(rdb: optuna.storages.RDBStorage, study_id: int,
                              started_before: datetime.datetime) -> list[int]:
    """Ids of the study's RUNNING trials that never recorded a heartbeat and started before
    ``started_before`` (naive UTC)."""
    with sqlalchemy.orm.Session(rdb.engine) as session:
        rows = (session.query(_models.TrialModel.trial_id)
                .outerjoin(_models.TrialHeartbeatModel,
                           _models.TrialHeartbeatModel.trial_id == _models.TrialModel.trial_id)
                .filter(_models.TrialModel.study_id == study_id,
                        _models.TrialModel.state == TrialState.RUNNING,
                        _models.TrialModel._datetime_start_utc < started_before,
                        _models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
                .all())
    return [row[0] for row in rows]


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage object a study reads and writes through (Optuna's cache wrapper, if any)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's row id in its storage."""
    return study._study_id


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """A trial's row id in its storage (what the storage's methods take)."""
    return trial._trial_id


def heartbeat_thread(trial: optuna.Trial) -> Any:
    """The thread ``study.optimize`` runs beside a trial to record its heartbeat, for a caller that
    runs trials itself (``start()``, ``join()``); it does nothing on a storage without heartbeats."""
    return get_heartbeat_thread(trial._trial_id, trial.study._storage)


def report_together(study: optuna.Study, reports: Sequence[tuple[optuna.Trial, int, float]]) -> None:
    """Several running trials' intermediate values (``trial.report(value, step)`` for each (trial, step,
    value)) in one multi-row ``INSERT``, one transaction, on an RDB storage; one by one elsewhere, or where
    a step was already reported (the table allows one value per trial and step)."""
    rdb = _rdb_of(study)
    if rdb is not None and len(reports) > 1:
        table = _models.TrialIntermediateValueModel.__table__
        rows = []
        for trial, step, value in reports:
            stored, kind = _models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(float(value))
            rows.append({"trial_id": trial._trial_id, "step": int(step), "intermediate_value": stored,
                         "intermediate_value_type": kind})

        def call() -> bool:
            try:
                with rdb.engine.begin() as connection:
                    connection.execute(insert(table), rows)
            except sqlalchemy.exc.IntegrityError:
                return False
            return True

        if _retried(rdb, call):
            for trial, step, value in reports:  # what trial.report keeps on the trial (should_prune reads it)
                trial._cached_frozen_trial.intermediate_values[int(step)] = float(value)
            return
    for trial, step, value in reports:
        trial.report(value, step)


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """``trial.set_user_attr(key, value)`` for every item of ``attrs``, in one transaction on an RDB
    storage (a trial's record at its end is a handful of attributes: one write, not one each)."""
    rdb = _rdb_of(trial.study)
    if rdb is None or len(attrs) < 2:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    from optuna.storages._rdb.storage import _create_scoped_session

    row = trial_id(trial)

    def call() -> None:
        with _create_scoped_session(rdb.scoped_session, True) as session:
            for key, value in attrs.items():
                rdb._set_trial_attr_without_commit(session, _models.TrialUserAttributeModel, row, key, value)

    _retried(rdb, call)
    trial._cached_frozen_trial.user_attrs.update(attrs)


def storage_url_of(study: optuna.Study) -> str | None:
    """The URL of an RDB-backed study's storage, found through Optuna's cache wrapper; else None."""
    storage: Any = study._storage
    for _ in range(3):
        url = getattr(storage, "url", None)
        if isinstance(url, str):
            return url
        storage = getattr(storage, "_backend", None)
    return None


def fail_if_running(trial: optuna.Trial, reason: str) -> bool:
    """Mark ``trial`` FAIL with ``fail_reason`` if it is still RUNNING (on an RDB storage in one
    transaction); True when this call did it."""
    rdb = _rdb_of(trial.study)
    if rdb is not None:
        return _retried(rdb, lambda: _queue.fail_running(rdb, trial._trial_id, reason))
    storage, tid = trial.study._storage, trial._trial_id
    if storage.get_trial(tid).state != TrialState.RUNNING:
        return False
    storage.set_trial_user_attr(tid, "fail_reason", reason)
    try:
        return storage.set_trial_state_values(tid, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # finished meanwhile (another process reaped it)
        return False


def is_enqueued(trial: optuna.Trial) -> bool:
    """True for a trial that runs an ``enqueue_trial`` config (Optuna 5 keeps those in the
    trial's ``fixed_params`` system attribute; ``Trial.system_attrs`` is gone)."""
    return "fixed_params" in trial.study._storage.get_trial_system_attrs(trial._trial_id)


_LOCAL_CAS = threading.Lock()  # a study without an RDB storage (in memory) lives in one process


def _rdb_of(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The RDB storage under a study's cache wrapper, or None (an in-memory study)."""
    storage: Any = study._storage
    for _ in range(3):
        if isinstance(storage, optuna.storages.RDBStorage):
            return storage
        storage = getattr(storage, "_backend", None)
    return None


def _retried(rdb: optuna.storages.RDBStorage, call: Any) -> Any:
    """``call()``, through the storage's outage retry when it has one (``ResilientRDBStorage``)."""
    retrying = getattr(rdb, "_retrying", None)
    return retrying(call) if retrying is not None else call()


def study_user_attr_json(study: optuna.Study, key: str) -> str | None:
    """The study's user attribute ``key`` as its storage holds it (JSON text), read now; None if absent."""
    rdb = _rdb_of(study)
    if rdb is None:
        attrs = study._storage.get_study_user_attrs(study._study_id)
        return json.dumps(attrs[key]) if key in attrs else None
    table = _models.StudyUserAttributeModel.__table__
    query = select(table.c.value_json).where(table.c.study_id == study._study_id, table.c.key == key)

    def call() -> str | None:
        with rdb.engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    return _retried(rdb, call)


def compare_and_set_study_user_attr(study: optuna.Study, key: str, expected: str | None, value: Any) -> bool:
    """Set the study's user attribute ``key`` to ``value`` only if the storage still holds ``expected``
    there (the JSON text :func:`study_user_attr_json` read; None: absent). True when this call wrote it.

    One conditional ``UPDATE ... WHERE value_json = expected`` (or, for an absent attribute, an
    ``INSERT`` that the table's unique (study, key) constraint lets one writer make), each its own
    transaction: a compare-and-set on SQLite, PostgreSQL and MySQL alike, as in
    :class:`ClaimingRDBStorage`. Optuna's own ``set_study_user_attr`` is a read then a write.
    """
    text = json.dumps(value)
    rdb = _rdb_of(study)
    if rdb is None:
        with _LOCAL_CAS:
            if study_user_attr_json(study, key) != expected:
                return False
            study._storage.set_study_user_attr(study._study_id, key, value)
            return True
    table = _models.StudyUserAttributeModel.__table__
    if expected is None:
        change: Any = insert(table).values(study_id=study._study_id, key=key, value_json=text)
    else:
        change = (update(table).where(table.c.study_id == study._study_id, table.c.key == key,
                                      table.c.value_json == expected).values(value_json=text))

    def call() -> bool:
        try:
            with rdb.engine.begin() as connection:
                written = connection.execute(change).rowcount == 1
        except sqlalchemy.exc.IntegrityError:  # another writer inserted it first
            return False
        return written or study_user_attr_json(study, key) == text  # a retried write that had committed

    return _retried(rdb, call)
