"""A stop signal inside a storage call is acted on after the call: a trial half-created by
``study.ask`` would otherwise stay RUNNING with nobody to fail it."""

from __future__ import annotations

import os
import signal

import optuna
import pytest
from helpers import TINY_SWEEP

import mnist_sweep as ms
from mnist_sweep._base.signals import StopSignals, deferring_stops
from mnist_sweep.storage._optuna_internals import ClaimingRDBStorage
from mnist_sweep.storage.retry import ResilientRDBStorage


def test_a_signal_inside_a_storage_call_is_raised_as_the_call_ends() -> None:
    with StopSignals.installed() as stop:
        with pytest.raises(KeyboardInterrupt), deferring_stops():
            os.kill(os.getpid(), signal.SIGINT)
            reached = True  # the handler ran and raised nothing inside the block
        assert reached and stop.received()


def test_a_polling_loop_gets_the_signal_by_asking() -> None:
    with StopSignals.installed() as stop:
        stop.polled = True
        with deferring_stops():
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.received()


def test_ctrl_c_as_a_trial_is_created_leaves_nothing_running(monkeypatch, tmp_path) -> None:
    created: list[int] = []

    def create_new_trial(self, *args, **kwargs):  # what _CachedStorage calls on its RDB backend
        def call():
            trial = ClaimingRDBStorage._create_new_trial(self, *args, **kwargs)
            created.append(trial.number)
            if len(created) == 3:
                os.kill(os.getpid(), signal.SIGINT)  # after the INSERT, before the trial reaches the objective
            return trial

        return self._retrying(call)

    monkeypatch.setattr(ResilientRDBStorage, "_create_new_trial", create_new_trial)
    url = f"sqlite:///{tmp_path / 's.db'}"
    sweep = ms.sweep_from_dict({**TINY_SWEEP, "trials": 6})
    with pytest.raises(ms.SweepInterrupted):
        ms.run(sweep, storage=url, progress="off")
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert len(trials) == 3
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials[:2])
    assert trials[2].state.name == "FAIL" and trials[2].user_attrs["fail_reason"].startswith("interrupted")
