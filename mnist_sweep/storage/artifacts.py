"""Where a study's kept models live: in its database when that is a server every machine reaches, else in
a folder beside its SQLite file.

Both are Optuna artifact stores (``open_reader``, ``write``, ``remove``; optuna-dashboard serves
either), whose writes are atomic, plus what the kept-models registry needs to clean up after a
crash (:meth:`listing`, :meth:`discard`):

- :class:`DatabaseArtifactStore`, for PostgreSQL and MySQL/MariaDB studies: a table of the study
  database's own, ``mnist_sweep_artifact_chunks`` (artifact id, chunk number, bytes), each file in
  chunks of :data:`CHUNK_BYTES` written in one transaction. Any machine that reaches the study
  reaches its models with nothing more than the storage URL. Chunks keep every row under MySQL's
  ``max_allowed_packet`` (16 MB by default on MariaDB; a kept MLP is 1-30 MB).
- :class:`FolderArtifactStore`, for SQLite studies: ``<the database's folder>/<study>/artifacts``
  (for the default ``studies/mnist_sweep.db``, ``studies/<study>/artifacts``), found from the database,
  not from the working directory, so a study's database and its folder copied together keep their
  models. Each file is written to a temporary name and renamed.

Example:
    >>> store = study_artifact_store(study)
    >>> store.where
    'the database postgresql+psycopg://me:***@db/sweeps'
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from mnist_sweep._base.files import atomic_path
from mnist_sweep._base.paths import safe_name, study_dir

#: Bytes per row of a file kept in the database.
CHUNK_BYTES = 4 << 20

#: The study attribute that records an SQLite study's artifact folder (relative: to the database's folder).
DIR_ATTR = "artifact_dir"

_METADATA = sqlalchemy.MetaData()
CHUNKS = sqlalchemy.Table(
    "mnist_sweep_artifact_chunks", _METADATA,
    sqlalchemy.Column("artifact_id", sqlalchemy.String(64), primary_key=True),
    sqlalchemy.Column("seq", sqlalchemy.Integer, primary_key=True, autoincrement=False),
    sqlalchemy.Column("data", sqlalchemy.LargeBinary(length=(1 << 32) - 1), nullable=False),
)


class FolderArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, writing each artifact to a temporary file first;
    ``before_write(artifact_id)`` is called before anything is written (to record its owner)."""

    def __init__(self, base_path: str | Path, before_write: Callable[[str], None] | None = None) -> None:
        Path(base_path).mkdir(parents=True, exist_ok=True)
        super().__init__(str(base_path))
        self.base = Path(base_path)
        self.before_write = before_write
        self.where = f"the folder {self.base.resolve()}"

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if self.before_write is not None:
            self.before_write(artifact_id)
        with atomic_path(self.base / Path(artifact_id).name) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(content_body, out)

    def listing(self) -> dict[str, str]:
        """Its files and the temporary files of unfinished writes (``.<id>.*.tmp``), name -> artifact id."""
        files = {}
        for path in self.base.iterdir():
            name = path.name
            if name.startswith("."):
                if name.endswith(".tmp"):
                    files[name] = name[1:].split(".", 1)[0]
            else:
                files[name] = name
        return files

    def discard(self, name: str) -> None:
        """Delete ``name`` (a listed file), if it is still there."""
        (self.base / Path(name).name).unlink(missing_ok=True)


class DatabaseArtifactStore:
    """Artifacts as rows of the study database's ``mnist_sweep_artifact_chunks`` table (made on first use).

    Each call is one transaction, run through ``retrying`` (the study storage's outage retry): a
    transaction that lost a deadlock (InnoDB's gap locks make concurrent writers of new ids collide)
    or met a restarting server was rolled back whole, so running it again is safe.
    """

    def __init__(self, engine: sqlalchemy.engine.Engine, where: str,
                 before_write: Callable[[str], None] | None = None,
                 retrying: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        self.engine, self.before_write, self.where = engine, before_write, f"the database {where}"
        self.retrying = retrying or (lambda call: call())
        _create_table(engine)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        def read() -> list[Any]:
            with self.engine.connect() as connection:
                return connection.execute(sqlalchemy.select(CHUNKS.c.data).where(CHUNKS.c.artifact_id == artifact_id)
                                          .order_by(CHUNKS.c.seq)).all()

        rows = self.retrying(read)
        if not rows:
            raise ArtifactNotFound(f"no artifact {artifact_id} in {self.where}")
        return io.BytesIO(b"".join(bytes(row[0]) for row in rows))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if self.before_write is not None:
            self.before_write(artifact_id)
        chunks = list(iter(lambda: content_body.read(CHUNK_BYTES), b""))

        def write_all() -> None:
            with self.engine.begin() as connection:  # all its chunks, or none
                connection.execute(CHUNKS.delete().where(CHUNKS.c.artifact_id == artifact_id))
                for seq, chunk in enumerate(chunks):
                    connection.execute(CHUNKS.insert().values(artifact_id=artifact_id, seq=seq, data=chunk))

        self.retrying(write_all)

    def remove(self, artifact_id: str) -> None:
        def delete() -> None:
            with self.engine.begin() as connection:
                connection.execute(CHUNKS.delete().where(CHUNKS.c.artifact_id == artifact_id))

        self.retrying(delete)

    def listing(self) -> dict[str, str]:
        """Every artifact in the table (of every study in the database), id -> id."""
        def select() -> list[str]:
            with self.engine.connect() as connection:
                return list(connection.execute(sqlalchemy.select(CHUNKS.c.artifact_id).distinct()).scalars().all())

        return {i: i for i in self.retrying(select)}

    def discard(self, name: str) -> None:
        self.remove(name)


def _create_table(engine: sqlalchemy.engine.Engine) -> None:
    """The chunks table, made once; workers that start together race to make it, and the losers find it."""
    for attempt in range(5):
        try:
            _METADATA.create_all(engine, checkfirst=True)
            return
        except sqlalchemy.exc.SQLAlchemyError as err:  # "already exists", "duplicate key" of a racing creator
            if attempt == 4 or not any(m in str(err).lower() for m in ("already exists", "duplicate")):
                raise


def _rdb(storage: Any) -> optuna.storages.RDBStorage | None:
    for _ in range(3):
        if isinstance(storage, optuna.storages.RDBStorage):
            return storage
        storage = getattr(storage, "_backend", None)
    return None


def in_database(storage: Any) -> bool:
    """Whether kept models of studies in ``storage`` live in the database (a server database)."""
    rdb = _rdb(storage)
    return rdb is not None and rdb.engine.dialect.name != "sqlite"


def database_store(storage: Any, before_write: Callable[[str], None] | None = None) -> DatabaseArtifactStore:
    """The artifact store of a server database ``storage`` (see :func:`in_database`)."""
    rdb = _rdb(storage)
    assert rdb is not None
    return DatabaseArtifactStore(rdb.engine, rdb.engine.url.render_as_string(hide_password=True), before_write,
                                 getattr(rdb, "_retrying", None))


def artifact_folder(storage: Any, study_name: str, recorded: str | None) -> Path:
    """An SQLite (or in-memory) study's artifact folder: ``recorded`` (absolute, or relative to the
    database's folder), else ``<database's folder>/<study>/artifacts``; in memory, ``studies/<study>/artifacts``."""
    rdb = _rdb(storage)
    database = rdb.engine.url.database if rdb is not None else None
    if not database or database == ":memory:":
        return Path(recorded) if recorded else study_dir(study_name) / "artifacts"
    base = Path(database).parent
    if recorded:
        return base / recorded  # an absolute recorded path stays itself
    return base / safe_name(study_name) / "artifacts"


def study_artifact_store(study: optuna.Study, before_write: Callable[[str], None] | None = None
                         ) -> DatabaseArtifactStore | FolderArtifactStore:
    """Where ``study`` keeps its models (the module docstring says which and why)."""
    if in_database(study._storage):
        return database_store(study._storage, before_write)
    return FolderArtifactStore(artifact_folder(study._storage, study.study_name, study.user_attrs.get(DIR_ATTR)),
                               before_write)
