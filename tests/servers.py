"""Database servers of the tests' own: a PostgreSQL cluster or a MariaDB server in a temporary folder,
on a port of its own, never the machine's shared server (a user's fresh machine has none).

``initdb``/``pg_ctl`` come from Debian's ``postgresql`` package, ``mariadb-install-db``/``mariadbd``
from ``mariadb-server``; ``.ci/run`` installs both. Where one is missing, the tests that need it
skip, naming the program. PostgreSQL runs as the ``postgres`` user (it refuses root), so its folder
is outside pytest's private temporary folders.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import free_port


def _pg_bin() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.iterdir() if (p / "bin" / "initdb").exists()), key=lambda p: int(p.name)) \
        if root.is_dir() else []
    if not versions:
        pytest.skip("needs PostgreSQL's initdb and pg_ctl (Debian package postgresql)")
    return versions[-1] / "bin"


class PrivatePostgres:
    """A PostgreSQL cluster of the tests' own: start, stop, restart; ``server`` is its URL without a database."""

    def __init__(self, folder: Path) -> None:
        self.bin, self.data, self.port = _pg_bin(), folder / "pg", free_port()
        self.data.mkdir()
        shutil.chown(self.data, "postgres")
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"])
        self.server = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"
        self.url = f"{self.server}/postgres"

    def _as_postgres(self, argv: list[str]) -> None:
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", " ".join(argv)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"'-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c max_connections=200'"
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                           str(self.data / "log"), "-w", *extra, action])

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def kill(self) -> None:
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c",
                        f"{self.bin / 'pg_ctl'} -D {self.data} -m immediate stop"], capture_output=True)


class PrivateMariaDB:
    """A MariaDB server of the tests' own (``mariadb-install-db`` then ``mariadbd`` on its own socket and
    port, no grant tables: root without a password); ``server`` is its URL without a database."""

    def __init__(self, folder: Path) -> None:
        install, daemon = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or (
            "/usr/sbin/mariadbd" if Path("/usr/sbin/mariadbd").exists() else None)
        if not install or not daemon:
            pytest.skip("needs mariadb-install-db and mariadbd (Debian package mariadb-server)")
        self.data, self.port = folder / "data", free_port()
        subprocess.run([install, "--no-defaults", f"--datadir={self.data}", "--user=root", "--skip-test-db",
                        "--auth-root-authentication-method=normal"], check=True, capture_output=True, timeout=300)
        self.proc = subprocess.Popen(
            [daemon, "--no-defaults", f"--datadir={self.data}", f"--socket={folder / 'sock'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--user=root", f"--pid-file={folder / 'pid'}", "--skip-grant-tables",
             "--max-connections=300", f"--log-error={folder / 'log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.server = f"mysql+pymysql://root@127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(folder / 'log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("mariadbd did not start listening within 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def private_folder(prefix: str) -> Path:
    """A temporary folder other users can enter (postgres reads its cluster there)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


@contextmanager
def running_postgres() -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres`, stopped and removed on exit."""
    folder = private_folder("mnist-sweep-pg-")
    server = PrivatePostgres(folder)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)
