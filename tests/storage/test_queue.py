"""Queue operations exactly once, on the tests' own PostgreSQL (tests/servers.py): a create retried
after its commit, dead workers' trials reaped by two workers at once, confirmation re-runs queued by
workers ending together, and a FAILed trial's kept model."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from mnist_sweep.search.confirmation import CONFIRMS_ATTR, enqueue_confirmations
from mnist_sweep.search.kept_models import keep_file, kept_models
from mnist_sweep.storage import _queue
from mnist_sweep.storage._optuna_internals import fail_if_running
from mnist_sweep.storage.artifacts import study_artifact_store
from mnist_sweep.storage.rdb import open_storage, reap_dead_trials
from mnist_sweep.sweep.config import HeartbeatConfig


def _dropped_after_commit(monkeypatch) -> list[int]:
    """The next create commits, then its answer is lost (the connection drops): a transient error."""
    made, real = [], _queue.create_trial

    def create(*args, **kwargs):
        trial_id = real(*args, **kwargs)
        made.append(trial_id)
        if len(made) == 1:
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))
        return trial_id

    monkeypatch.setattr(_queue, "create_trial", create)
    return made


def test_an_enqueue_retried_after_its_commit_queues_one_trial(postgres_url: str, monkeypatch) -> None:
    study = optuna.create_study(storage=open_storage(postgres_url, retry_seconds=30), direction="maximize")
    made = _dropped_after_commit(monkeypatch)
    study.enqueue_trial({"units": 64})
    assert len(made) == 2 and made[0] == made[1]  # the retry found the trial its first attempt made
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING]
    assert _queue.enqueue_once(study, "k", {"units": 32}) == _queue.enqueue_once(study, "k", {"units": 32})
    assert len(study.get_trials()) == 2


def test_an_ask_retried_after_its_commit_leaves_no_orphan(postgres_url: str, monkeypatch) -> None:
    study = optuna.create_study(storage=open_storage(postgres_url, retry_seconds=30), direction="maximize")
    made = _dropped_after_commit(monkeypatch)
    trial = study.ask()
    assert len(made) == 2 and made[0] == made[1]
    assert [t.number for t in study.get_trials(states=(TrialState.RUNNING,))] == [trial.number]


def _dead_trial(study: optuna.Study, **user_attrs) -> optuna.Trial:
    trial = study.ask({"units": optuna.distributions.CategoricalDistribution([32, 64])})
    for key, value in user_attrs.items():
        trial.set_user_attr(key, value)
    study._storage.record_heartbeat(trial._trial_id)
    return trial


def test_dead_workers_trials_are_failed_with_why_and_requeued_within_max_retries(postgres_url: str) -> None:
    heartbeat = HeartbeatConfig(interval=1, grace_period=2, max_retries=1)
    rdbs = [open_storage(postgres_url, heartbeat) for _ in range(2)]
    study = optuna.create_study(study_name="q", storage=rdbs[0], direction="maximize")
    other = optuna.load_study(study_name="q", storage=rdbs[1])
    dead = _dead_trial(study, **{CONFIRMS_ATTR: 7, "worker": 3, "history": [0.5]})
    time.sleep(3.5)
    failed: list[list[int]] = []
    barrier = threading.Barrier(2)

    def reap(s: optuna.Study, rdb) -> None:
        barrier.wait()
        failed.append(reap_dead_trials(s, rdb))

    threads = [threading.Thread(target=reap, args=pair) for pair in ((study, rdbs[0]), (other, rdbs[1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(failed, key=len) == [[], [dead.number]]  # one reaper did it, once
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[dead.number].user_attrs["fail_reason"].startswith("worker stopped sending heartbeats")
    (copy,) = [t for t in trials if t.state == TrialState.WAITING]
    assert copy.user_attrs == {CONFIRMS_ATTR: 7}  # what it is for; not the dead run's reason, worker, history
    assert copy.system_attrs["fixed_params"] == {"units": dead.params["units"]}
    assert copy.system_attrs["retry_history"] == [dead.number]

    again = study.ask()  # the copy, run and dead too: retried once already, so not queued a third time
    assert again.number == copy.number
    study._storage.record_heartbeat(again._trial_id)
    time.sleep(3.5)
    assert reap_dead_trials(study, rdbs[0]) == [copy.number]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]


def test_confirmation_reruns_are_queued_once_by_workers_ending_together(postgres_url: str) -> None:
    study = optuna.create_study(study_name="c", storage=open_storage(postgres_url), direction="maximize")
    for units, value in ((32, 0.9), (64, 0.95), (128, 0.8)):
        trial = study.ask({"units": optuna.distributions.CategoricalDistribution([32, 64, 128])})
        assert trial.params["units"] in (32, 64, 128)
        study.tell(trial, value + units * 1e-6)
    workers = [optuna.load_study(study_name="c", storage=open_storage(postgres_url)) for _ in range(4)]
    barrier = threading.Barrier(len(workers))

    def confirm(s: optuna.Study) -> None:
        barrier.wait()
        enqueue_confirmations(s, top=2, seeds=2)

    threads = [threading.Thread(target=confirm, args=(s,)) for s in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reruns = [t for t in study.get_trials() if CONFIRMS_ATTR in t.user_attrs]
    assert len(reruns) == 4 and all(t.state == TrialState.WAITING for t in reruns)
    assert sorted(t.user_attrs[CONFIRMS_ATTR] for t in reruns) == [0, 0, 1, 1]


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_a_trial_failed_after_keeping_its_model_keeps_none(where: str, request, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}" if where == "sqlite" else request.getfixturevalue("postgres_url")
    study = optuna.create_study(study_name="k", storage=open_storage(url), direction="maximize")
    stopped = study.ask()
    first = keep_file(stopped, lambda path: path.write_bytes(b"model"), 1, 0.99, 3)
    assert first is not None
    assert fail_if_running(stopped, "interrupted (SIGTERM)")  # stopped between keeping and telling
    assert kept_models(study) == []  # not offered to final
    trial = study.ask()
    kept = keep_file(trial, lambda path: path.write_bytes(b"model"), 1, 0.9, 3)
    study.tell(trial, 0.9)
    assert [m.artifact_id for m in kept_models(study)] == [kept]
    assert sorted(study_artifact_store(study).listing()) == [kept]  # the FAILed trial's file is gone
