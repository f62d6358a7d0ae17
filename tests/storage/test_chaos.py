"""Faults at scale, on real servers: a PostgreSQL that restarts, workers killed again and again,
eight workers on one study, a full disk, a trial that runs away, MariaDB as a storage.

The restarts use a private PostgreSQL cluster (``initdb`` in a temporary folder, its own port,
run as the ``postgres`` user), never the machine's shared server; the full disk is a tmpfs of a
few hundred KB (root only, as in CI).
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import sqlalchemy.exc
from helpers import free_port, scratch_database
from servers import PrivatePostgres, running_postgres

from mnist_sweep.errors import InputError, StorageUnavailable
from mnist_sweep.storage.rdb import open_storage
from mnist_sweep.storage.retry import DISK_FULL, READ_ONLY, TRANSIENT, classify

QUICK = {"hidden_layers": 1, "units": [16, 32], "dropout": 0.0, "optimizer": "adam", "batch_size": 128,
         "epochs": {"low": 1, "high": 3}, "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}
SECONDS_LONG = {**QUICK, "units": [64, 128], "epochs": {"low": 10, "high": 20}}  # a few seconds per trial
DATA = {"validation_size": 500, "train_size": 2000}
HEARTBEAT = {"interval": 1, "grace_period": 5, "max_retries": 1}


@pytest.fixture
def private_postgres():
    """A cluster of this test's own: it stops and restarts it."""
    with running_postgres() as server:
        yield server


def _start(args: list[str], **kwargs) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mnist_sweep", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def _tally(url: str, name: str = "tiny") -> Counter[str]:
    study = optuna.load_study(study_name=name, storage=url)
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def _done(url: str, name: str = "tiny") -> int:
    try:
        tally = _tally(url, name)
    except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
        return 0
    return tally["COMPLETE"] + tally["PRUNED"]


def _duplicated_enqueued(url: str, name: str = "tiny") -> int:
    study = optuna.load_study(study_name=name, storage=url)
    finished = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                      optuna.trial.TrialState.PRUNED))]
    runs = Counter(t.params["learning_rate"] for t in finished if "fixed_params" in t.system_attrs)
    return sum(n - 1 for n in runs.values() if n > 1)


def _enqueue(n: int, units: int = 16, epochs: int = 1) -> list[dict]:
    return [{"hidden_layers": 1, "units": units, "epochs": epochs, "learning_rate": round(0.001 + 0.0005 * i, 6)}
            for i in range(n)]


# --- what a storage error means --------------------------------------------------------------

def test_what_a_storage_error_means() -> None:
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    with pytest.raises(sqlalchemy.exc.OperationalError) as refused:
        engine.connect()
    assert classify(refused.value) == TRANSIENT
    assert classify(ValueError("a bug")) is None
    assert classify(sqlite3.OperationalError("database or disk is full")) == DISK_FULL
    assert classify(sqlite3.OperationalError("attempt to write a readonly database")) == READ_ONLY


def test_every_call_optunas_cache_wrapper_makes_on_the_storage_is_retried() -> None:
    import inspect
    import re

    from optuna.storages import _cached_storage, _heartbeat

    from mnist_sweep.storage.retry import RETRIED_METHODS, ResilientRDBStorage

    source = inspect.getsource(_cached_storage) + inspect.getsource(_heartbeat)
    private = set(re.findall(r"(?:_backend|storage)\.(_[a-z][a-z_]+)\(", source))
    own = {"_create_new_trial", "create_new_trial", "set_trial_state_values", "record_heartbeat", "reap"}
    assert own <= set(vars(ResilientRDBStorage))  # retried by hand (a create under one key; see retry.py)
    assert private and private <= set(RETRIED_METHODS) | own, private - set(RETRIED_METHODS) - own
    for name in RETRIED_METHODS:
        assert getattr(ResilientRDBStorage, name).__wrapped__ is not None


def test_a_read_only_sqlite_database_is_one_line_exit_2(write_sweep, small_disk: Path, capsys) -> None:
    from mnist_sweep.cli.main import main

    url = f"sqlite:///{small_disk / 'ro.db'}"
    open_storage(url).engine.dispose()  # the schema exists
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    code = main(["run", str(write_sweep(trials=1, data=DATA)), "--storage", url])
    err = capsys.readouterr().err
    assert code == InputError.exit_code, err
    assert err.count("\n") == 1 and "read-only" in err and "ro.db" in err, err


# --- the database restarts, or stays away ----------------------------------------------------

@pytest.mark.slow
def test_a_postgresql_restart_mid_sweep_loses_nothing(write_sweep, private_postgres: PrivatePostgres) -> None:
    path = write_sweep(trials=16, space=SECONDS_LONG, data=DATA, heartbeat=HEARTBEAT)
    proc = _start(["run", str(path), "--jobs", "2", "--storage", private_postgres.url])
    deadline = time.monotonic() + 300
    while _done(private_postgres.url) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.5)
    assert _tally(private_postgres.url)["RUNNING"] >= 1  # trials in flight when the database goes
    private_postgres.restart()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    tally = _tally(private_postgres.url)
    assert tally["COMPLETE"] + tally["PRUNED"] == 16 and tally["RUNNING"] == 0, (tally, out)
    assert "Traceback" not in out and "is answering again" in out, out


@pytest.mark.slow
def test_a_database_away_longer_than_storage_retry_stops_with_exit_75_and_resumes(
        write_sweep, private_postgres: PrivatePostgres) -> None:
    path = write_sweep(trials=6, space=SECONDS_LONG, data=DATA, heartbeat=HEARTBEAT, storage_retry={"seconds": 4})
    proc = _start(["run", str(path), "--storage", private_postgres.url])
    deadline = time.monotonic() + 300
    while _done(private_postgres.url) < 1:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.3)
    private_postgres.stop()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == StorageUnavailable.exit_code, out
    last = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(last) == 1 and "not answering" in last[0] and f"127.0.0.1:{private_postgres.port}" in last[0], out
    assert "Traceback" not in out
    private_postgres.start()
    again = _start(["run", str(path), "--storage", private_postgres.url])
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out2
    tally = _tally(private_postgres.url)
    assert tally["COMPLETE"] + tally["PRUNED"] == 6 and tally["RUNNING"] == 0, tally


# --- workers killed again and again; many workers ---------------------------------------------

@pytest.mark.slow
def test_workers_killed_again_and_again_lose_no_trial(write_sweep, private_postgres: PrivatePostgres) -> None:
    url, kills, trials = private_postgres.url, 4, 40
    path = write_sweep(trials=trials, space=SECONDS_LONG, data=DATA, heartbeat=HEARTBEAT,
                       enqueue=_enqueue(6, units=64, epochs=10))
    # Each kill waits for some progress and lands while enough trials are left for the survivors to
    # reap the dead worker's trial (heartbeat grace 5 s) and run it again: a kill after the target
    # is reached would test nothing (on a fast machine 24 trials took about 20 s, and a worker
    # restarts in 2 s now that a JAX run imports no TensorFlow).
    kill_at = (2, 8, 14, 20)
    workers = {i: _start(["worker", str(path), "--storage", url, "--worker-id", str(i)]) for i in range(3)}
    landed, rng = 0, random.Random(0)
    deadline = time.monotonic() + 900
    while _done(url) < trials and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.6))
        if landed < kills and kill_at[landed] <= _done(url) < trials - 10:
            i = rng.randrange(3)
            if workers[i].poll() is None:
                workers[i].kill()
                workers[i].communicate()
                landed += 1
                workers[i] = _start(["worker", str(path), "--storage", url, "--worker-id", str(i)])
        for i, proc in workers.items():  # one that stopped by itself while the study is short: restarted
            assert proc.poll() in (None, 0), proc.communicate()[0]
            if proc.poll() is not None and _done(url) < trials:
                workers[i] = _start(["worker", str(path), "--storage", url, "--worker-id", str(i)])
    for proc in workers.values():
        proc.communicate(timeout=300)
    tally = _tally(url)
    assert landed == kills
    assert tally["COMPLETE"] + tally["PRUNED"] == trials and tally["RUNNING"] == 0, tally
    assert tally["FAIL"] <= kills, tally
    assert _duplicated_enqueued(url) == 0
    reasons = [t.user_attrs.get("fail_reason") for t in optuna.load_study(study_name="tiny", storage=url).trials
               if t.state.name == "FAIL"]
    assert all(reason and "heartbeat" in reason for reason in reasons), reasons  # each one a killed worker's


@pytest.mark.slow
def test_eight_workers_on_one_postgresql_study_hit_the_target_exactly(
        write_sweep, private_postgres: PrivatePostgres) -> None:
    path = write_sweep(trials=40, space=QUICK, data=DATA, heartbeat=HEARTBEAT, enqueue=_enqueue(12))
    proc = _start(["run", str(path), "--jobs", "8", "--storage", private_postgres.url])
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    tally = _tally(private_postgres.url)
    assert tally["COMPLETE"] + tally["PRUNED"] == 40 and tally["RUNNING"] == 0, tally
    assert _duplicated_enqueued(private_postgres.url) == 0
    study = optuna.load_study(study_name="tiny", storage=private_postgres.url)
    assert len({t.user_attrs.get("worker") for t in study.trials if t.state.name == "COMPLETE"}) >= 6


def test_workers_starting_together_on_a_new_study_queue_its_trials_once(write_sweep, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'together.db'}"
    path = write_sweep(trials=8, space=QUICK, data=DATA, enqueue=_enqueue(6))
    procs = [_start(["worker", str(path), "--storage", url, "--worker-id", str(i)]) for i in range(3)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode != 0 for p in procs):
        failed = [(p.returncode, out) for p, out in zip(procs, outs, strict=True) if p.returncode]
        pytest.fail("\n".join(f"exit {code}: {out[-1500:]}" for code, out in failed))
    study = optuna.load_study(study_name="tiny", storage=url)
    queued = [t for t in study.trials if "fixed_params" in t.system_attrs]
    assert len(queued) == 6, [t.params for t in queued]
    assert _tally(url)["COMPLETE"] + _tally(url)["PRUNED"] == 8


# --- a full disk ------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.fail("the full-disk test needs root (tmpfs mount), as CI has")
    folder = tmp_path / "ram"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)  # lazily: a test may still hold a file open


@pytest.mark.slow
def test_sqlite_on_a_full_disk_stops_in_one_line_stays_intact_and_resumes(write_sweep, small_disk: Path) -> None:
    path = write_sweep(trials=30, space=QUICK, data=DATA, heartbeat=HEARTBEAT, enqueue=_enqueue(4))
    url = f"sqlite:///{small_disk / 'full.db'}"
    proc = _start(["run", str(path), "--storage", url])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == StorageUnavailable.exit_code, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "disk is full" in errors[0], out
    check = sqlite3.connect(small_disk / "full.db").execute("pragma integrity_check").fetchone()[0]
    assert check == "ok"
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = _start(["run", str(path), "--storage", url])
    out2, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out2
    tally = _tally(url)
    assert tally["COMPLETE"] + tally["PRUNED"] == 30 and tally["RUNNING"] == 0, tally


# --- a trial that runs away -------------------------------------------------------------------

def test_a_trial_past_trial_timeout_fails_with_its_reason_and_the_sweep_goes_on(write_sweep, sqlite_url: str) -> None:
    from mnist_sweep.cli.main import main

    runaway = {"hidden_layers": 1, "units": 16, "epochs": 3000, "learning_rate": 0.001}
    path = write_sweep(trials=2, space={**QUICK, "epochs": [1, 2, 3000]}, data=DATA, trial_timeout=6,
                       enqueue=[runaway], sampler={"name": "random", "seed": 1},
                       )
    started = time.monotonic()
    assert main(["run", str(path), "--storage", sqlite_url]) == 0
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    first = study.trials[0]
    assert first.state.name == "FAIL" and "trial_timeout" in first.user_attrs["fail_reason"]
    assert first.duration.total_seconds() < 20
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 2
    assert time.monotonic() - started < 300


# --- MariaDB ----------------------------------------------------------------------------------

@pytest.fixture
def mariadb_url(mariadb_server):
    with scratch_database(mariadb_server.server) as url:
        yield url


def test_two_workers_share_one_mariadb_study_exactly(write_sweep, mariadb_url: str) -> None:
    path = write_sweep(trials=10, space=QUICK, data=DATA, enqueue=_enqueue(4))
    proc = _start(["run", str(path), "--jobs", "2", "--storage", mariadb_url])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    tally = _tally(mariadb_url)
    assert tally["COMPLETE"] + tally["PRUNED"] == 10 and tally["RUNNING"] == 0, tally
    assert _duplicated_enqueued(mariadb_url) == 0


def test_an_unreachable_database_at_the_start_is_one_line_exit_2_without_a_wait(write_sweep, capsys) -> None:
    from mnist_sweep.cli.main import main

    started = time.monotonic()
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x?password=S3cretQS"
    code = main(["run", str(write_sweep(storage_retry={"seconds": 600})), "--storage", url])
    err = capsys.readouterr().err
    assert code == InputError.exit_code and time.monotonic() - started < 30
    assert err.count("\n") == 1 and "S3cretQS" not in err and "password=***" in err, err


def test_a_connection_dropped_while_the_storage_opens_is_retried_a_refused_one_is_not(monkeypatch, tmp_path) -> None:
    from mnist_sweep.storage import rdb

    real, calls = rdb.ResilientRDBStorage, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # what a proxy cutting every connection gave a worker starting at the wrong moment
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(
                "consuming input failed: server closed the connection unexpectedly"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rdb, "ResilientRDBStorage", flaky)
    assert open_storage(f"sqlite:///{tmp_path / 'x.db'}", retry_seconds=30) is not None and len(calls) == 2
    started = time.monotonic()
    with pytest.raises(InputError, match="cannot open storage"):
        open_storage(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x", retry_seconds=30)  # refused: at once
    assert time.monotonic() - started < 5
