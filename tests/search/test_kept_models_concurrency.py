"""The kept-models registry under workers finishing at once, and after crashes: it holds exactly the
models to retain among every COMPLETE trial, every file it names is there, and no other file is."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from helpers import scratch_database
from optuna.trial import TrialState

from mnist_sweep.search.kept_models import (
    REGISTRY_ATTR,
    KeptModel,
    artifact_dir,
    keep_file,
    kept_models,
    retained,
)
from mnist_sweep.storage._optuna_internals import compare_and_set_study_user_attr, study_user_attr_json
from mnist_sweep.storage.artifacts import DIR_ATTR, study_artifact_store
from mnist_sweep.storage.rdb import open_storage

REPO = Path(__file__).resolve().parents[2]
@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request, tmp_path: Path):
    """A fresh storage: an SQLite file, or a scratch database on the tests' own PostgreSQL or MariaDB
    server (tests/servers.py)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'c.db'}"
        return
    if request.param == "postgresql":
        server, admin, drop = request.getfixturevalue("postgres_server").server, "postgres", "WITH (FORCE)"
    else:
        server, admin, drop = request.getfixturevalue("mariadb_server").server, "", ""
    with scratch_database(server, admin, drop) as url:
        yield url


WORKER = """
import random, sys, time
from pathlib import Path
import optuna
from mnist_sweep.search.kept_models import keep_file
from mnist_sweep.storage.artifacts import DIR_ATTR, study_artifact_store
from mnist_sweep.storage.rdb import open_storage

url, go, seed, trials, k, pareto = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \\
    int(sys.argv[5]), sys.argv[6] == "1"
study = optuna.load_study(study_name="c", storage=open_storage(url))
rng = random.Random(seed)
while not go.exists():
    time.sleep(0.005)
for _ in range(trials):
    trial = study.ask()
    value = round(rng.uniform(0.9, 1.0), 3)
    costs = {"n_params": rng.randint(1000, 100000), "latency_ms_batch1": round(rng.uniform(0.1, 2.0), 3)}
    trial.set_user_attr("costs", costs)
    pause = rng.uniform(0.0, 0.03)
    keep_file(trial, lambda path: (time.sleep(pause), path.write_bytes(b"model")), 1, value, k, costs=costs,
              pareto=pareto)
    study.tell(trial, value)
"""


def _study(url: str, folder: Path) -> optuna.Study:
    study = optuna.create_study(study_name="c", storage=open_storage(url), direction="maximize")
    study.set_user_attr(DIR_ATTR, str(folder))
    return study


def _assert_consistent(study: optuna.Study, k: int, pareto: bool) -> None:
    """The registry holds the models ``retained`` picks among every COMPLETE trial; the store (a folder,
    or the database's table) holds exactly their files."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    everyone = [KeptModel(t.number, "", t.value, 1, t.user_attrs["costs"]["n_params"],
                          t.user_attrs["costs"]["latency_ms_batch1"]) for t in complete]
    kept = kept_models(study)
    assert [m.trial for m in kept] == [m.trial for m in retained(everyone, k, pareto)]
    assert len(kept) >= min(k, len(complete))
    assert sorted(study_artifact_store(study).listing()) == sorted(m.artifact_id for m in kept)
    for m in kept:  # each entry's file is the one its trial wrote and recorded
        assert study.trials[m.trial].user_attrs["kept_model"]["artifact_id"] == m.artifact_id


def test_worker_processes_finishing_together_keep_exactly_the_best(url: str, tmp_path: Path) -> None:
    _race_processes(url, tmp_path, pareto=True)


def test_worker_processes_keep_exactly_the_best_k_without_the_fronts(tmp_path: Path) -> None:
    _race_processes(f"sqlite:///{tmp_path / 'c.db'}", tmp_path, pareto=False)


def _race_processes(url: str, tmp_path: Path, pareto: bool) -> None:
    study = _study(url, tmp_path / "artifacts")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(go), str(seed), "6", "3", str(int(pareto))],
                                env=env, stderr=subprocess.PIPE, text=True) for seed in range(4)]
    time.sleep(0.5)
    go.touch()  # all four start finishing trials at the same moment
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-2000:]
    assert len(study.trials) == 24
    _assert_consistent(study, 3, pareto)


@pytest.mark.parametrize("pareto", [False, True])
def test_threads_with_their_own_connections_finishing_in_step(tmp_path: Path, pareto: bool) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    study = _study(url, tmp_path / "artifacts")
    threads, rounds, k = 4, 6, 2
    barrier, errors = threading.Barrier(threads), []

    def work(seed: int) -> None:
        mine = optuna.load_study(study_name="c", storage=open_storage(url))  # its own engine and connections
        rng = random.Random(seed)
        try:
            for _ in range(rounds):
                trial = mine.ask()
                value = rng.uniform(0.9, 1.0)
                costs = {"n_params": rng.randint(1000, 100000), "latency_ms_batch1": rng.uniform(0.1, 2.0)}
                trial.set_user_attr("costs", costs)
                barrier.wait(timeout=60)  # every thread registers in the same instant
                keep_file(trial, lambda path: path.write_bytes(b"model"), 1, value, k, costs=costs, pareto=pareto)
                mine.tell(trial, value)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)
            barrier.abort()

    pool = [threading.Thread(target=work, args=(seed,)) for seed in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert not errors, errors
    _assert_consistent(study, k, pareto)


def _crashed_writer(study: optuna.Study, state: TrialState) -> str:
    """A trial that recorded and wrote its model's file, then died before registering it."""
    trial = study.ask()
    trial.set_user_attr("costs", {"n_params": 10, "latency_ms_batch1": 0.01})
    name = f"00000000-0000-0000-0000-{trial.number:012d}"
    trial.set_user_attr("kept_model", {"artifact_id": name, "epoch": 1})
    artifact_dir(study).mkdir(parents=True, exist_ok=True)
    (artifact_dir(study) / name).write_bytes(b"model")
    if state.is_finished():
        study.tell(trial, state=state)
    return name


def test_a_crash_s_leftover_files_go_at_the_next_registration(tmp_path: Path) -> None:
    study = _study(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "artifacts")
    folder = artifact_dir(study)
    failed = _crashed_writer(study, TrialState.FAIL)  # died before registering: its trial was failed
    running = _crashed_writer(study, TrialState.RUNNING)  # still running: between its write and its registration
    half = folder / f".{failed}.x1y2.tmp"  # a write killed half-way (atomic_path's temporary name)
    half.write_bytes(b"mo")
    stranger = folder / "not-this-studys"  # no trial of this study owns it (a folder shared with another study)
    stranger.write_bytes(b"?")
    trial = study.ask()
    trial.set_user_attr("costs", {"n_params": 100, "latency_ms_batch1": 0.1})
    kept = keep_file(trial, lambda path: path.write_bytes(b"model"), 1, 0.95, 3)
    study.tell(trial, 0.95)
    left = {p.name for p in folder.iterdir()}
    assert left == {kept, running, stranger.name}  # the failed trial's file and its temporary file are gone
    assert [m.artifact_id for m in kept_models(study)] == [kept]


def test_a_lost_candidate_leaves_no_file_and_a_displaced_one_goes(tmp_path: Path) -> None:
    study = _study(f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "artifacts")
    ids = {}
    for value in (0.90, 0.95, 0.97):
        trial = study.ask()
        ids[value] = keep_file(trial, lambda path: path.write_bytes(b"model"), 1, value, 2)
        study.tell(trial, value)
    assert all(ids.values())
    assert [m.value for m in kept_models(study)] == [0.97, 0.95]
    assert sorted(p.name for p in artifact_dir(study).iterdir()) == sorted([ids[0.97], ids[0.95]])
    trial = study.ask()
    assert keep_file(trial, lambda path: path.write_bytes(b"model"), 1, 0.5, 2) is None  # not written at all
    assert "kept_model" not in trial.user_attrs


def test_compare_and_set_writes_only_over_what_was_read(url: str, tmp_path: Path) -> None:
    study = _study(url, tmp_path / "artifacts")
    other = optuna.load_study(study_name="c", storage=open_storage(url))
    assert study_user_attr_json(study, REGISTRY_ATTR) is None
    assert compare_and_set_study_user_attr(study, REGISTRY_ATTR, None, {"1": {"value": 0.5}})
    assert not compare_and_set_study_user_attr(other, REGISTRY_ATTR, None, {"2": {}})  # it exists now
    seen = study_user_attr_json(other, REGISTRY_ATTR)
    assert compare_and_set_study_user_attr(other, REGISTRY_ATTR, seen, {"1": {"value": 0.6}})
    assert not compare_and_set_study_user_attr(study, REGISTRY_ATTR, seen, {"3": {}})  # stale
    assert study.user_attrs[REGISTRY_ATTR] == {"1": {"value": 0.6}}  # what Optuna reads


def test_compare_and_set_in_memory() -> None:
    study = optuna.create_study()
    assert compare_and_set_study_user_attr(study, "a", None, [1])
    assert not compare_and_set_study_user_attr(study, "a", None, [2])
    assert compare_and_set_study_user_attr(study, "a", "[1]", [3]) and study.user_attrs["a"] == [3]
