"""Multi-objective sweeps: accuracy against parameter count as an Optuna multi-objective study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers import TINY_SWEEP

import mnist_sweep as ms
from mnist_sweep.cli.main import main
from mnist_sweep.search.loop import run_sweep
from mnist_sweep.sweep.goals import accuracy_of, best_trial

SWEEP = {**TINY_SWEEP, "name": "duo", "trials": 4, "objectives": ["val_accuracy", "n_params"],
         "space": {**TINY_SWEEP["space"], "hidden_layers": 1, "units": [16, 32, 64]}}


@pytest.fixture(scope="module")
def duo(tmp_path_factory, tiny_dataset) -> tuple[optuna.Study, str]:
    sweep = {key: value for key, value in SWEEP.items() if key != "pruner"}  # left out: no pruning is the default
    url = f"sqlite:///{tmp_path_factory.mktemp('duo') / 'duo.db'}"
    return run_sweep(ms.sweep_from_dict(sweep), url, dataset=tiny_dataset), url


def test_two_objectives_make_a_multi_objective_study_that_never_prunes(duo) -> None:
    study, _ = duo
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    for trial in complete:
        assert trial.values[1] == trial.user_attrs["n_params"]  # the size is the second objective
        assert trial.intermediate_values == {}  # Optuna keeps no epochs here: nothing to prune on
        assert len(trial.user_attrs["history"]["val_accuracy"]) == trial.params["epochs"]
    front = {t.number for t in study.best_trials}
    assert best_trial(study).number in front  # the most accurate is on Optuna's Pareto front
    assert accuracy_of(best_trial(study)) == max(t.values[0] for t in complete)


def test_results_commands_rank_a_multi_objective_study_by_accuracy(duo, tmp_path: Path, capsys) -> None:
    study, url = duo
    best = best_trial(study)
    assert main(["export", "--study", "duo", "--storage", url, "-o", str(tmp_path / "best.yaml")]) == 0
    assert f"trial {best.number}" in capsys.readouterr().out
    assert main(["report", "--study", "duo", "--storage", url, "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert f"trial {best.number}, validation accuracy" in page and "Pareto front" in page
    frame = ms.trials_frame(study).set_index("number")
    assert frame.loc[best.number, "value"] == pytest.approx(accuracy_of(best))
    capsys.readouterr()
    assert main(["studies", "--storage", url]) == 0
    assert "objectives maximize, minimize" in capsys.readouterr().out
    curve = ms.report_figures(study)["anytime"]
    assert len(curve.data) >= 1  # drawn from the trials' histories


def test_a_pruner_in_a_multi_objective_sweep_is_one_line_exit_2(write_sweep, capsys) -> None:
    path = write_sweep("duo", **{**{k: v for k, v in SWEEP.items() if k != "name"}, "pruner": {"name": "median"}})
    assert main(["run", str(path), "--storage", "sqlite:///x.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pruner" in err and "multi-objective" in err and str(path) in err
    assert not Path("x.db").exists()  # nothing created


@pytest.mark.parametrize("objectives, message", [
    (["n_params"], "val_accuracy first"),
    (["val_accuracy", "n_params", "n_params"], "once each"),
    (["val_accuracy", "speed"], "objectives.1"),
])
def test_bad_objectives_are_named(objectives, message) -> None:
    with pytest.raises(ms.InputError, match=message):
        ms.sweep_from_dict({**SWEEP, "objectives": objectives})


def test_a_single_objective_study_does_not_resume_as_multi_objective(duo, tiny_dataset) -> None:
    _, url = duo
    single = {**SWEEP, "objectives": ["val_accuracy"], "pruner": {"name": "none"}}
    with pytest.raises(ms.InputError, match="stored directions"):
        run_sweep(ms.sweep_from_dict(single), url, dataset=tiny_dataset)
