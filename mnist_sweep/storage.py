"""Storages: Optuna's RDB storage on SQLite or PostgreSQL, opened the way sweeps need it.

:func:`open_storage` gives SQLite a generous busy timeout and WAL mode, PostgreSQL a
pre-ping, every storage the atomic claim of queued trials
(:class:`~mnist_sweep.optuna_internals.ClaimingRDBStorage`) and, if asked, heartbeats with a
retry of dead workers' trials. :func:`reap_dead_trials` fails the trials of dead workers.

Example:
    >>> storage = open_storage("sqlite:///studies/mnist_sweep.db")
    >>> redact("postgresql://me:secret@db/sweeps")
    'postgresql://me:***@db/sweeps'
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from mnist_sweep.config import HeartbeatConfig
from mnist_sweep.errors import InputError
from mnist_sweep.optuna_internals import (
    ClaimingRDBStorage,
    running_without_heartbeat,
    study_id,
    study_storage,
    utc_now,
)

SQLITE_TIMEOUT_S = 300  # Optuna's own test helper uses 300 s; a short one kills the heartbeat thread (#4994)


def redact(url: str) -> str:
    """The storage URL with any password masked, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str, heartbeat: HeartbeatConfig | None = None, create: bool = True) -> optuna.storages.RDBStorage:
    """An RDB storage for sweeps (see the module docstring).

    Args:
        url: an SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``).
        heartbeat: heartbeat settings; ``None`` turns heartbeats off (read-only commands).
        create: for SQLite, create the file's folder; when False a missing file is an error.

    Raises:
        InputError: the storage cannot be opened or reached (a database error, a missing driver,
            an old schema); the database's own error is kept as the cause. Anything else is a bug
            and propagates as it is.
    """
    engine_kwargs: dict[str, Any] = {}
    sqlite_file = False
    if url.startswith("sqlite:"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        sqlite_file = bool(path) and path != ":memory:"
        if sqlite_file:
            if not create and not Path(path).is_file():
                raise InputError(f"{url}: no such storage file")
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise InputError(f"{url}: cannot create the storage's folder ({err.strerror})") from err
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {
            "heartbeat_interval": heartbeat.interval,
            "grace_period": heartbeat.grace_period or 3 * heartbeat.interval,
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=heartbeat.max_retries
            ),
        }
    try:
        storage = ClaimingRDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as err:
        raise InputError(f"{redact(url)}: missing database driver ({err.name or err}); "
                         "try pip install 'mnist-sweep[postgres]'") from err
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise InputError(f"{redact(url)}: cannot open storage ({_first_line(err)})") from err
    except RuntimeError as err:
        if "storage upgrade" not in str(err):  # Optuna's message for an older schema
            raise
        raise InputError(f"{redact(url)}: {_first_line(err)}") from err
    if sqlite_file:
        _use_wal(storage)
    return storage


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _use_wal(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging for every connection: readers (the dashboard, the sampler's reads) no
    longer block the writer, and a commit appends to the log without an fsync
    (``synchronous=NORMAL``: durable at checkpoints; a power cut can lose the last commits, never
    corrupt the file)."""
    from sqlalchemy import event

    def pragmas(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()


def reap_dead_trials(study: optuna.Study, rdb: optuna.storages.RDBStorage) -> list[int]:
    """Fail the RUNNING trials of dead workers; returns the numbers of the trials failed here.

    Optuna's ``fail_stale_trials`` fails (and retries) trials whose last heartbeat is older than
    the grace period, but skips trials that never recorded one. A worker killed between creating
    its trial and its first heartbeat would so leave a trial RUNNING forever, and a run waiting
    for the last trials of its target would wait forever. Every mnist_sweep worker records a
    heartbeat as its trial starts, so a RUNNING trial without any, started more than the grace
    period ago, is dead: it is failed too, and its config queued again if it was an enqueued
    one. A storage without heartbeats does nothing.
    """
    if rdb.heartbeat_interval is None:
        return []
    optuna.storages.fail_stale_trials(study)
    started_before = utc_now() - datetime.timedelta(seconds=rdb.grace_period or 2 * rdb.heartbeat_interval)
    storage, failed = study_storage(study), []  # through the study's cache, so it sees the change
    for tid in running_without_heartbeat(rdb, study_id(study), started_before):
        trial = storage.get_trial(tid)
        try:
            storage.set_trial_user_attr(tid, "fail_reason", "worker died before its first heartbeat")
            storage.set_trial_state_values(tid, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker reaped it first
            continue
        failed.append(trial.number)
        if trial.system_attrs.get("fixed_params"):
            study.enqueue_trial(trial.system_attrs["fixed_params"])
    return failed
