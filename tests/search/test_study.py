"""Samplers, pruners and storages built from sweep files."""

from __future__ import annotations

import optuna
import pytest

from mnist_sweep._base.paths import storage_url
from mnist_sweep.errors import InputError
from mnist_sweep.search.samplers import make_pruner, make_sampler
from mnist_sweep.storage.rdb import open_storage, redact
from mnist_sweep.sweep.config import parse_sweep

SPACE = {"hidden_layers": {"low": 0, "high": 2}, "dropout": {"low": 0.0, "high": 0.2, "step": 0.1},
         "optimizer": ["sgd", "adam"], "epochs": 3}


@pytest.mark.parametrize(
    ("name", "cls"),
    [("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
     ("grid", optuna.samplers.GridSampler), ("cmaes", optuna.samplers.CmaEsSampler),
     ("qmc", optuna.samplers.QMCSampler)],
)
def test_every_sampler_name_builds_its_sampler(name: str, cls: type) -> None:
    sweep = parse_sweep({"name": "s", "trials": 2, "sampler": name, "space": SPACE}, "s.yaml")
    assert isinstance(make_sampler(sweep), cls)


def test_grid_enumerates_stepped_ranges_and_choices() -> None:
    sweep = parse_sweep({"name": "s", "trials": 2, "sampler": "grid", "space": SPACE}, "s.yaml")
    grid = make_sampler(sweep)._search_space
    assert grid["hidden_layers"] == [0, 1, 2]
    assert grid["dropout"] == [0.0, 0.1, 0.2]
    assert sorted(grid["optimizer"]) == ["adam", "sgd"]
    assert grid["epochs"] == [3]


def test_grid_refuses_a_continuous_float_range() -> None:
    sweep = parse_sweep({"name": "s", "trials": 2, "sampler": "grid",
                         "space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}}, "s.yaml")
    with pytest.raises(InputError, match="space.learning_rate: the grid sampler needs 'choices' or a 'step'"):
        make_sampler(sweep)


@pytest.mark.parametrize(
    ("pruner", "cls"),
    [({"name": "none"}, optuna.pruners.NopPruner), ({"name": "median"}, optuna.pruners.MedianPruner),
     ({"name": "hyperband"}, optuna.pruners.HyperbandPruner),
     ({"name": "successive_halving"}, optuna.pruners.SuccessiveHalvingPruner)],
)
def test_every_pruner_name_builds_its_pruner(pruner: dict, cls: type) -> None:
    sweep = parse_sweep({"name": "s", "trials": 2, "pruner": pruner,
                         "space": {"epochs": {"low": 5, "high": 40}}}, "s.yaml")
    built = make_pruner(sweep)
    assert isinstance(built, cls)
    if cls is optuna.pruners.HyperbandPruner:
        assert built._max_resource == 40  # 'auto' is the most epochs a trial can run


def test_storage_url_precedence(monkeypatch) -> None:
    monkeypatch.delenv("MNIST_SWEEP_STORAGE", raising=False)
    assert storage_url(None) == "sqlite:///studies/mnist_sweep.db"
    monkeypatch.setenv("MNIST_SWEEP_STORAGE", "sqlite:///env.db")
    assert storage_url(None) == "sqlite:///env.db"
    assert storage_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_passwords_are_never_printed() -> None:
    assert redact("postgresql://bob:s3cret@db.example:5432/optuna") == "postgresql://bob:***@db.example:5432/optuna"


def test_missing_sqlite_file_is_not_created_for_reading(tmp_path) -> None:
    with pytest.raises(InputError, match="no such storage file"):
        open_storage(f"sqlite:///{tmp_path / 'none.db'}", create=False)
    assert not (tmp_path / "none.db").exists()


def test_studies_command_lists_counts_and_best(tmp_path, capsys) -> None:
    from mnist_sweep.cli.main import main

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="listed", storage=url, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.97, params={}, distributions={}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert main(["studies", "--storage", url]) == 0
    assert "listed: 1 complete, 1 fail; best 0.9700 (trial 0)" in capsys.readouterr().out


def test_study_summaries_count_every_state_and_load_each_study_once(tmp_path, monkeypatch) -> None:
    import mnist_sweep as ms

    url = f"sqlite:///{tmp_path / 's.db'}"
    one = optuna.create_study(study_name="one", storage=url, direction="maximize")
    for value in (0.91, 0.97, 0.93):
        one.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    one.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    optuna.create_study(study_name="duo", storage=url, directions=["maximize", "minimize"])
    loads: list[str] = []
    real_load = optuna.load_study

    def counted(*args, **kwargs):
        loads.append(kwargs["study_name"])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(optuna, "load_study", counted)
    summaries = ms.study_summaries(url)
    assert loads == ["duo", "one"]
    assert summaries == [
        ms.StudySummary("duo", {}, None, None, ["maximize", "minimize"]),
        ms.StudySummary("one", {"COMPLETE": 3, "PRUNED": 1}, 1, 0.97, ["maximize"]),
    ]
    with pytest.raises(InputError, match="no such storage file"):
        ms.study_summaries(f"sqlite:///{tmp_path / 'none.db'}")


def test_schema_command_writes_the_shipped_schema(tmp_path) -> None:
    import json

    from mnist_sweep.cli.main import main
    from mnist_sweep.sweep.loader import sweep_json_schema

    assert main(["schema", "-o", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == sweep_json_schema()


def test_sqlite_studies_use_write_ahead_logging(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "wal.db"
    storage = open_storage(f"sqlite:///{path}")
    optuna.create_study(storage=storage, study_name="wal").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with sqlite3.connect(path) as plain:  # the mode is stored in the file: any reader sees it
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert len(optuna.load_study(study_name="wal", storage=f"sqlite:///{path}").trials) == 2


def test_in_memory_sqlite_storage_keeps_its_tables() -> None:
    storage = open_storage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert len(study.trials) == 1


def test_a_database_error_is_input_error_with_its_cause() -> None:
    # nothing listens on port 1: the driver's error becomes one line, and stays attached as the cause
    pytest.importorskip("psycopg")
    with pytest.raises(InputError, match=r"postgresql://u:\*\*\*@127\.0\.0\.1:1/x: cannot open storage") as caught:
        open_storage("postgresql://u:secret@127.0.0.1:1/x")
    assert caught.value.__cause__ is not None and "secret" not in str(caught.value)


def test_a_bug_while_opening_a_storage_is_not_called_bad_input(monkeypatch, tmp_path) -> None:
    # open_storage used to turn any exception into exit 2 ("cannot open storage") and drop it
    def bug(self, *args, **kwargs):
        raise ZeroDivisionError("a bug, not the user's storage")

    monkeypatch.setattr("mnist_sweep.storage._optuna_internals.ClaimingRDBStorage.__init__", bug)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        open_storage(f"sqlite:///{tmp_path / 'x.db'}")
