"""What we use of Optuna's internals, checked against the installed Optuna (see optuna_internals.py)."""

from __future__ import annotations

import datetime
import re
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mnist_sweep.storage._optuna_internals import (
    CHECKED_OPTUNA,
    running_without_heartbeat,
    set_user_attrs,
    study_id,
    trial_id,
)
from mnist_sweep.storage.rdb import open_storage, reap_dead_trials
from mnist_sweep.sweep.config import HeartbeatConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def new_york(monkeypatch):
    """This process in UTC-5 (UTC-4 in summer), as a user's laptop may be; CI runs in UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _claim_one(url: str, heartbeat: HeartbeatConfig | None = None) -> tuple[optuna.Study, int]:
    storage = open_storage(url, heartbeat)
    study = optuna.create_study(study_name="tz", storage=storage)
    study.enqueue_trial({"x": 1})
    tid = trial_id(study.get_trials(deepcopy=False)[0])
    assert storage.set_trial_state_values(tid, TrialState.RUNNING)
    return study, tid


def test_a_claimed_trial_starts_now_in_any_time_zone(new_york, sqlite_url: str) -> None:
    study, _ = _claim_one(sqlite_url)
    started = study.get_trials(deepcopy=False)[0].datetime_start  # Optuna shows local time
    # The claim writes UTC into Optuna 5's UTC column; local time there would be 4-5 hours off here.
    assert abs((started - datetime.datetime.now()).total_seconds()) < 60, started
    sampled = study.ask()  # a trial Optuna starts itself, for comparison
    assert abs((sampled.datetime_start - started).total_seconds()) < 60


def test_a_just_claimed_trial_is_not_taken_for_a_dead_one(new_york, sqlite_url: str) -> None:
    # Before its first heartbeat a claimed trial looks dead only once it is older than the grace
    # period: with local time in the UTC column, UTC-5 made it look 5 hours old at once.
    study, tid = _claim_one(sqlite_url, HeartbeatConfig(interval=1, grace_period=30))
    rdb = open_storage(sqlite_url, HeartbeatConfig(interval=1, grace_period=30))
    utc_now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert running_without_heartbeat(rdb, study_id(study), utc_now - datetime.timedelta(seconds=30)) == []
    assert reap_dead_trials(study, rdb) == []
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING


def test_the_oldest_supported_optuna_is_one_this_code_was_checked_against() -> None:
    # optuna_internals reads Optuna 5's UTC column (_datetime_start_utc): Optuna 4.x has none, so
    # the floor in pyproject.toml must not admit a release older than the ones checked.
    text = (REPO / "pyproject.toml").read_text()
    floor = re.search(r'"optuna>=([0-9.]+)"', text)
    assert floor, "pyproject.toml must pin a floor for optuna"
    as_tuple = lambda v: tuple(int(p) for p in v.split(".")[:2])  # noqa: E731
    assert as_tuple(floor[1]) >= min(as_tuple(v) for v in CHECKED_OPTUNA)
    assert as_tuple(optuna.__version__) >= as_tuple(floor[1])


@pytest.mark.parametrize("in_memory", [False, True])
def test_user_attrs_written_together_read_back_as_one_by_one(sqlite_url: str, in_memory: bool) -> None:
    storage = None if in_memory else open_storage(sqlite_url, None)
    study = optuna.create_study(storage=storage, direction="maximize")
    trial = study.ask()
    attrs = {"history": {"val_accuracy": [0.5, 0.75]}, "epochs_run": 2, "fit_seconds": 1.25}
    set_user_attrs(trial, attrs)
    assert trial.user_attrs == attrs  # the running trial's own view, as set_user_attr keeps it
    study.tell(trial, 0.75)
    assert study.trials[0].user_attrs == attrs
    if not in_memory:
        assert optuna.load_study(study_name=study.study_name, storage=sqlite_url).trials[0].user_attrs == attrs
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(trial, {"late": 1, "later": 2})  # as set_user_attr refuses a finished trial
