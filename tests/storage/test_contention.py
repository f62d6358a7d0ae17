"""A transaction that loses to another writer (a deadlock, a serialization failure) was rolled back
whole: the storage runs it again, quietly, and so does the database artifact store, whose concurrent
writers of new ids collide in InnoDB's gap locks."""

from __future__ import annotations

import threading
import uuid

import sqlalchemy
from sqlalchemy import event

from mnist_sweep.storage.artifacts import CHUNKS, database_store
from mnist_sweep.storage.retry import CONTENTION, TRANSIENT, ResilientRDBStorage, classify


def _operational(message: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception(message))


def test_lost_transactions_are_contention_and_dropped_connections_an_outage() -> None:
    assert classify(_operational("(1213, 'Deadlock found when trying to get lock; try restarting transaction')")) \
        == CONTENTION
    assert classify(_operational("deadlock detected\nDETAIL: Process 1 waits for ShareLock")) == CONTENTION
    assert classify(_operational("could not serialize access due to concurrent update")) == CONTENTION
    assert classify(_operational("server closed the connection unexpectedly")) == TRANSIENT


def test_a_deadlocked_call_runs_again_without_a_word(tmp_path, capsys) -> None:
    storage = ResilientRDBStorage(f"sqlite:///{tmp_path / 'c.db'}", retry_seconds=5)
    losses = iter([True, True, False])

    def call() -> int:
        if next(losses):
            raise _operational("(1213, 'Deadlock found when trying to get lock; try restarting transaction')")
        return 5

    assert storage._retrying(call) == 5
    assert capsys.readouterr().err == ""  # not an outage: no "not answering", no "answering again"


def test_the_database_store_writes_through_a_lost_deadlock(postgres_url: str, capsys) -> None:
    storage = ResilientRDBStorage(postgres_url, retry_seconds=5)
    store = database_store(storage)
    lost: list[str] = []

    def lose_the_first_insert(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith(f"INSERT INTO {CHUNKS.name}") and not lost:
            lost.append(statement)
            raise _operational("deadlock detected")

    event.listen(storage.engine, "before_cursor_execute", lose_the_first_insert)
    try:
        store.write("a1", _Body(b"x" * 100))
    finally:
        event.remove(storage.engine, "before_cursor_execute", lose_the_first_insert)
    assert lost and store.open_reader("a1").read() == b"x" * 100
    assert "not answering" not in capsys.readouterr().err


def test_writers_of_new_models_at_once_on_mariadb_all_succeed(mariadb_server) -> None:
    from helpers import scratch_database

    with scratch_database(mariadb_server.server, "", "") as url:
        storage = ResilientRDBStorage(url, retry_seconds=30)
        store = database_store(storage)
        ids = [[uuid.uuid4().hex for _ in range(15)] for _ in range(8)]
        errors: list[BaseException] = []
        start = threading.Barrier(len(ids))

        def write(mine: list[str]) -> None:
            try:
                start.wait(timeout=30)
                for artifact_id in mine:
                    store.write(artifact_id, _Body(artifact_id.encode()))
                    if artifact_id.endswith(("0", "1", "2", "3")):
                        store.remove(artifact_id)
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=write, args=(mine,)) for mine in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors[0]
        kept = {i for mine in ids for i in mine if not i.endswith(("0", "1", "2", "3"))}
        assert set(store.listing()) == kept
        storage.engine.dispose()


class _Body:
    """A file-like body, read in chunks as Optuna's upload hands it over."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.at + n
        chunk, self.at = self.data[self.at:end], min(end, len(self.data))
        return chunk
