"""Storages: Optuna's RDB storage on SQLite or PostgreSQL, opened the way sweeps need it.

:func:`open_storage` gives SQLite a generous busy timeout and WAL mode, PostgreSQL and MySQL a
pre-ping, every storage the atomic claim of queued trials
(:class:`~mnist_sweep.storage._optuna_internals.ClaimingRDBStorage`) and calls that wait out an outage
(:class:`~mnist_sweep.storage.retry.ResilientRDBStorage`), and, if asked, heartbeats with a
retry of dead workers' trials. :func:`reap_dead_trials` fails the trials of dead workers.

Example:
    >>> storage = open_storage("sqlite:///studies/mnist_sweep.db")
    >>> redact("postgresql://me:secret@db/sweeps")
    'postgresql://me:***@db/sweeps'
"""

from __future__ import annotations

import re
import time
import unicodedata
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import make_url

from mnist_sweep.errors import InputError
from mnist_sweep.storage._optuna_internals import ClaimingRDBStorage, study_id, study_storage
from mnist_sweep.storage.retry import DISK_FULL, READ_ONLY, ResilientRDBStorage, classify
from mnist_sweep.sweep.config import HeartbeatConfig

SQLITE_TIMEOUT_S = 300  # Optuna's own test helper uses 300 s; a short one kills the heartbeat thread (#4994)


_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token", "sslpassword")


def redact(url: str) -> str:
    """The storage URL with any password masked, for printing: the one after the user name and
    any given as a query parameter (``?password=...``, ``sslpassword``, ``token``...).

    >>> redact("postgresql://me@db/sweeps?password=secret&sslmode=require")
    'postgresql://me@db/sweeps?password=***&sslmode=require'
    """

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        shown = url.split("@")[-1] if "@" in url else url
        return _mask_query(shown)
    secret = [key for key in parsed.query if key.lower() in _SECRET_QUERY_KEYS]
    if secret:
        parsed = parsed.update_query_dict({key: "***" for key in secret})
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def _mask_query(text: str) -> str:

    keys = "|".join(_SECRET_QUERY_KEYS)
    return re.sub(rf"(?i)([?&;](?:{keys})=)[^&;#]*", r"\1***", text)


def open_storage(url: str, heartbeat: HeartbeatConfig | None = None, create: bool = True,
                 retry_seconds: float = 0.0) -> optuna.storages.RDBStorage:
    """An RDB storage for sweeps (see the module docstring).

    Args:
        url: an SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``, ``mysql+pymysql://...``).
        heartbeat: heartbeat settings; ``None`` turns heartbeats off (read-only commands).
        create: for SQLite, create the file's folder; when False a missing file is an error.
        retry_seconds: how long a call waits out a storage that stopped answering (a sweep's
            ``storage_retry.seconds``); opening is not retried: a storage that cannot be reached
            at the start is an error at once, so a wrong URL says so without a wait.

    Raises:
        InputError: the storage cannot be opened or reached (a database error, a missing driver,
            an old schema); the database's own error is kept as the cause. Anything else is a bug
            and propagates as it is.
    """
    _check_url(url)
    engine_kwargs: dict[str, Any] = {}
    sqlite_file = False
    if url.startswith("sqlite:"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        sqlite_file = bool(path) and path != ":memory:"
        if sqlite_file:
            try:
                if not create and not Path(path).is_file():
                    raise InputError(f"{redact(url)}: no such storage file")
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except (OSError, RecursionError) as err:
                why = getattr(err, "strerror", None) or "path too deep"
                raise InputError(f"{redact(url)}: cannot create the storage's folder ({why})") from None
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
        elif url.startswith(("mysql", "mariadb")):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
            engine_kwargs["pool_recycle"] = 3600  # MySQL drops connections idle for wait_timeout (8 h)
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat.interval,
                  "grace_period": heartbeat.grace_period or 3 * heartbeat.interval}
    try:
        storage = _create(url, retry_seconds, engine_kwargs, kwargs)
    except ImportError as err:
        extra = "mysql" if url.startswith(("mysql", "mariadb")) else "postgres"
        raise InputError(f"{redact(url)}: missing database driver ({err.name or err}); "
                         f"try pip install 'mnist-sweep[{extra}]'") from err
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        kind = classify(err)
        why = {DISK_FULL: "the disk is full", READ_ONLY: "the database is read-only"}.get(kind or "",
                                                                                          "cannot open storage")
        raise InputError(f"{redact(url)}: {why} ({_first_line(err)})") from err
    except RuntimeError as err:
        if "storage upgrade" not in str(err):  # Optuna's message for an older schema
            raise
        raise InputError(f"{redact(url)}: {_first_line(err)}") from err
    if sqlite_file:
        _use_wal(storage)
    if heartbeat is not None:
        storage.requeue_retries = heartbeat.max_retries  # the storage's reaper queues dead workers' configs
    return storage


_SCHEMA_RACE = ("already exists", "duplicate key", "unique constraint failed", "duplicate entry")


#: Errors of a connection that was made and then lost (not a server that cannot be reached).
_DROPPED = ("server closed the connection", "consuming input failed", "connection reset", "lost connection",
            "terminating connection", "broken pipe", "eof detected", "connection was closed")


def _create(url: str, retry_seconds: float, engine_kwargs: dict[str, Any], kwargs: dict[str, Any]
            ) -> ResilientRDBStorage:
    """Optuna's storage; workers that start together on a new database race to create its tables
    (``table studies already exists``): the losers try again, and find them made. A connection the
    server drops while the storage opens is retried for ``retry_seconds``, as any call is later; a
    server that cannot be reached at all still fails at once (a wrong URL should not wait)."""
    started, attempt = time.monotonic(), 0
    while True:
        try:
            return ResilientRDBStorage(url, retry_seconds=retry_seconds, shown_url=redact(url),
                                       engine_kwargs=engine_kwargs, **kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
            text = " ".join(str(e).lower() for e in (err, err.__cause__, err.__context__) if e is not None)
            race = any(marker in text for marker in _SCHEMA_RACE) and attempt < 4
            dropped = any(marker in text for marker in _DROPPED) and time.monotonic() - started < retry_seconds
            if not (race or dropped):
                raise
            attempt += 1
            time.sleep(min(0.2 * attempt, 2.0))


def _check_url(url: str) -> None:
    """Refuse what no database URL holds before anything echoes or parses it: control characters
    (a newline would split the error line) and braces (Optuna formats the URL as a template of
    environment variables, so a stray ``{`` would be a ``ValueError``)."""
    bad = sorted({f"{ord(c):#04x}" for c in url if _breaks_a_line(c)})
    if bad:
        shown = redact("".join("?" if _breaks_a_line(c) else c for c in url))
        raise InputError(f"{shown}: a storage URL cannot hold control characters (found {', '.join(bad)})")
    if "{" in url or "}" in url:
        raise InputError(f"{redact(url)}: a storage URL cannot hold braces; write environment values into it "
                         "before passing it")


def _breaks_a_line(char: str) -> bool:
    """A control character or a Unicode line or paragraph separator (``\\x85``, ``\\u2028``...)."""

    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def _first_line(err: BaseException) -> str:
    cause = err.__cause__ if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ else err
    text = str(getattr(cause, "orig", None) or cause).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _use_wal(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging for every connection: readers (the dashboard, the sampler's reads) no
    longer block the writer, and a commit appends to the log without an fsync
    (``synchronous=NORMAL``: durable at checkpoints; a power cut can lose the last commits, never
    corrupt the file)."""

    def pragmas(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()


def reap_dead_trials(study: optuna.Study, rdb: optuna.storages.RDBStorage) -> list[int]:
    """Fail the RUNNING trials of dead workers, each with its reason, and queue their configs again
    (up to ``heartbeat.max_retries`` times); returns the numbers of the trials failed here.

    A dead worker's trial is one whose heartbeat is older than the grace period, or that never
    recorded one and started longer ago than it (a worker killed between creating its trial and its
    first heartbeat; Optuna's own reaper skips those, and a run waiting for the last trials of its
    target would wait forever). The failing, its reason and the re-queue are one transaction
    (:func:`mnist_sweep.storage._queue.fail_and_requeue`). A storage without heartbeats does nothing.
    """
    if rdb.heartbeat_interval is None:
        return []
    failed = rdb.reap(study_id(study)) if isinstance(rdb, ClaimingRDBStorage) else []
    storage = study_storage(study)
    return [storage.get_trial(tid).number for tid in failed]
