"""A storage that outlives a database restart: every call retried with backoff, for a bounded time.

Optuna's RDB storage lets a dropped connection escape from whatever call meets it: a worker
whose PostgreSQL restarts dies, often behind a second error (``UnboundLocalError:
updated_state`` from ``Study.optimize``, optuna#5280), and leaves its trial RUNNING.
:class:`ResilientRDBStorage` retries each storage call on a connection-level error (SQLAlchemy's
``OperationalError`` / ``InterfaceError``, a connection invalidated mid-transaction) with
exponential backoff (0.25 s doubling to 5 s) until the call succeeds or ``retry_seconds`` have
passed since the outage began; the trial in flight keeps training meanwhile (its epochs wait
at their report), the heartbeat thread included (its failures are never fatal to it). Past that
time, or at once for a disk that is full, the call raises
:class:`~mnist_sweep.errors.StorageUnavailable` (one line, exit 75), and later calls stop waiting.
A read-only database file is the user's to fix: :class:`~mnist_sweep.errors.InputError`. A
transaction that lost to another writer (a deadlock, a serialization failure: many workers on one
MySQL or PostgreSQL study) is no outage: it is run again at once, quietly, up to
:data:`CONTENTION_TRIES` times.

Each call is one transaction, so a retry repeats a write that did not commit. The rare write
that committed but whose answer was lost is handled where it matters: a state change found
already made is success; a trial's creation is keyed, so its retry finds the trial it made
(:mod:`mnist_sweep.storage._queue`).

Example:
    >>> storage = ResilientRDBStorage("postgresql+psycopg://db/sweeps", retry_seconds=120)
    >>> storage.get_all_studies()  # waits through a restart of the database, up to 120 s
"""

from __future__ import annotations

import functools
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from mnist_sweep._base.signals import deferring_stops
from mnist_sweep.errors import InputError, StorageUnavailable
from mnist_sweep.storage._optuna_internals import PRIVATE_STORAGE_CALLS, BaseHeartbeat, ClaimingRDBStorage
from mnist_sweep.storage._queue import create_key

T = TypeVar("T")

FIRST_DELAY_S, MAX_DELAY_S = 0.25, 5.0
TRANSIENT, DISK_FULL, READ_ONLY, CONTENTION = "transient", "disk full", "read-only", "contention"
#: Tries of a transaction that keeps losing to other writers (a deadlock, a serialization failure).
CONTENTION_TRIES = 20
_CONTENTION_TEXT = ("deadlock", "could not serialize", "lock wait timeout")
_DISK_FULL_TEXT = ("database or disk is full", "no space left on device", "disk full", "could not extend file")
_READ_ONLY_TEXT = ("attempt to write a readonly database", "read-only file system", "readonly database")


def classify(err: BaseException) -> str | None:
    """What a storage error means: :data:`TRANSIENT` (the connection; retry), :data:`CONTENTION` (the
    transaction lost to another writer and was rolled back; run it again, quietly), :data:`DISK_FULL`,
    :data:`READ_ONLY`, or None (anything else: a bug or bad data, not retried).

    >>> classify(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    'transient'
    """
    for link in _chain(err):
        text = str(link).lower()
        if any(marker in text for marker in _DISK_FULL_TEXT):
            return DISK_FULL
        if any(marker in text for marker in _READ_ONLY_TEXT):
            return READ_ONLY
    for link in _chain(err):
        if isinstance(link, sqlalchemy.exc.DBAPIError) and link.connection_invalidated:
            return TRANSIENT
        if isinstance(link, sqlalchemy.exc.DBAPIError) and any(m in str(link).lower() for m in _CONTENTION_TEXT):
            return CONTENTION
        if isinstance(link, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return TRANSIENT
        if isinstance(link, sqlalchemy.exc.TimeoutError):  # no connection free in the pool
            return TRANSIENT
    return None


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and link not in seen and len(seen) < 10:
        seen.append(link)
        link = link.__cause__ or link.__context__
    return seen


def _first_line(err: BaseException) -> str:
    cause = next((e for e in _chain(err) if isinstance(e, sqlalchemy.exc.DBAPIError)), err)
    text = str(getattr(cause, "orig", None) or cause).strip()
    return (text.splitlines()[0] if text else type(cause).__name__)[:200]


class ResilientRDBStorage(ClaimingRDBStorage):
    """:class:`~mnist_sweep.storage._optuna_internals.ClaimingRDBStorage` whose calls wait out an outage.

    Args:
        url: the database URL (passed to Optuna's ``RDBStorage``).
        retry_seconds: how long one outage is waited out before :class:`StorageUnavailable`.
        shown_url: the URL as error lines show it (password redacted).
        **kwargs: Optuna's ``RDBStorage`` arguments (engine, heartbeat).
    """

    def __init__(self, url: str, *, retry_seconds: float = 120.0, shown_url: str | None = None, **kwargs: Any) -> None:
        self.retry_seconds = retry_seconds
        self.shown_url = shown_url or url
        self._outage_since: float | None = None
        self._gave_up: StorageUnavailable | None = None
        self._lock = threading.Lock()
        super().__init__(url, **kwargs)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def _retrying(self, call: Callable[[], T]) -> T:
        delay, attempt = FIRST_DELAY_S, 0
        while True:
            try:
                with deferring_stops():  # a stop signal lands after the call, not inside a half-done write
                    value = call()
            except optuna.exceptions.UpdateFinishedTrialError:
                raise
            except Exception as err:
                kind = classify(err)
                if kind is None:
                    raise
                if kind == READ_ONLY:
                    raise InputError(f"{self.shown_url}: the database is read-only ({_first_line(err)}); "
                                     "make the file writable or pick another --storage") from None
                if kind == CONTENTION and attempt < CONTENTION_TRIES:  # not an outage: no warning, no clock
                    time.sleep(random.uniform(0.01, 0.05 * (attempt + 1)))
                    attempt += 1
                    continue
                if kind == DISK_FULL:
                    raise self._give_up(f"{self.shown_url}: the disk is full ({_first_line(err)}); the study is "
                                        "intact: free some space and run the same command to resume") from None
                waited = self._waited()
                if self._gave_up is not None or waited >= self.retry_seconds:
                    raise self._give_up(f"{self.shown_url}: not answering for {waited:.0f} s ({_first_line(err)}); "
                                        "the study is intact: run the same command to resume") from None
                if attempt == 0 and waited == 0.0:
                    print(f"warning: storage {self.shown_url} is not answering ({_first_line(err)}); retrying for "
                          f"up to {self.retry_seconds:g} s (storage_retry.seconds)", file=sys.stderr, flush=True)
                time.sleep(min(delay, max(0.05, self.retry_seconds - waited)))
                delay, attempt = min(2 * delay, MAX_DELAY_S), attempt + 1
                continue
            self._recovered()
            return value

    def _waited(self) -> float:
        with self._lock:
            now = time.monotonic()
            if self._outage_since is None:
                self._outage_since = now
            return now - self._outage_since

    def _recovered(self) -> None:
        if self._outage_since is None and self._gave_up is None:
            return
        with self._lock:
            if self._outage_since is not None and self._gave_up is None:
                waited = time.monotonic() - self._outage_since
                print(f"storage {self.shown_url} is answering again after {waited:.1f} s", file=sys.stderr, flush=True)
            self._outage_since, self._gave_up = None, None

    def _give_up(self, message: str) -> StorageUnavailable:
        with self._lock:
            if self._gave_up is None:
                self._gave_up = StorageUnavailable(message)
            return self._gave_up

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """As Optuna's, retried; a finishing write that turns out to have committed before its
        connection dropped is success, not ``UpdateFinishedTrialError``."""
        tries = {"n": 0}

        def call() -> bool:
            tries["n"] += 1
            try:
                return ClaimingRDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if tries["n"] > 1 and state.is_finished() and self.get_trial(trial_id).state == state:
                    return True
                raise

        return self._retrying(call)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._create_new_trial(study_id, template_trial)._trial_id

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None,
                          key: str | None = None) -> FrozenTrial:
        """As the claiming storage's, retried under one create key: a retry of a create that committed
        before its connection dropped returns that trial, not a second one."""
        key = key or create_key(template_trial)
        return self._retrying(lambda: ClaimingRDBStorage._create_new_trial(self, study_id, template_trial, key))

    def reap(self, study_id: int) -> list[int]:
        return self._retrying(lambda: ClaimingRDBStorage.reap(self, study_id))

    def record_heartbeat(self, trial_id: int) -> None:
        """As Optuna's, retried, and never raising: Optuna's heartbeat thread dies at its first
        exception (optuna#4994), and the main thread meets any outage itself."""
        try:
            self._retrying(lambda: ClaimingRDBStorage.record_heartbeat(self, trial_id))
        except (StorageUnavailable, InputError):
            pass


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(ClaimingRDBStorage, name)

    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(lambda: method(self, *args, **kwargs))

    return call


#: Every storage call a study, a trial or the heartbeat makes (Optuna's storage API, and the private
#: methods its cache wrapper ``_CachedStorage`` calls on the RDB storage directly), less the two
#: defined above.
RETRIED_METHODS = tuple(sorted(
    ({name for base in (optuna.storages.BaseStorage, BaseHeartbeat) for name, member in vars(base).items()
      if callable(member) and not name.startswith("_")}
     | set(PRIVATE_STORAGE_CALLS))
    - {"set_trial_state_values", "record_heartbeat", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback",
       "remove_session", "create_new_trial", "_create_new_trial"}
))
for _name in RETRIED_METHODS:
    setattr(ResilientRDBStorage, _name, _retried(_name))
