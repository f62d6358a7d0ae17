"""Sweep files: every bad-input case is named by file and key path, all at once, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_sweep.cli.main import main
from mnist_sweep.errors import InputError
from mnist_sweep.sweep.config import parse_sweep, with_overrides
from mnist_sweep.sweep.loader import load_sweep, resolve_sweep, sweep_json_schema

REPO = Path(__file__).resolve().parents[2]


def _errors(tmp_path: Path, text: str) -> str:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_sweep(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trials: 3\ntrails: 4\n", "x.yaml: trails: unknown key (did you mean 'trials'?)"),
        ("trials: 3\nspace: {dropout: {low: 0.5, high: 0.2}}\n",
         "x.yaml: space.dropout.high: must be >= low (low=0.5, high=0.2)"),
        ("trials: 3\nspace: {units: {choices: []}}\n", "x.yaml: space.units.choices: List should have at least 1"),
        ("trials: 3\nspace: {optimizer: [adam, adamm]}\n", "x.yaml: space.optimizer.choices.1: Input should be"),
        ("trials: 3\nsampler: {name: nonesuch}\n", "x.yaml: sampler.name: must be one of: tpe, random"),
        ("trials: 3\npruner: wait\n", "x.yaml: pruner.name: must be one of: none, median"),
        ("trials: ten\n", "x.yaml: trials: Input should be a valid integer"),
        ("trials: 0\n", "x.yaml: trials: Input should be greater than or equal to 1"),
        ("trials: 3\nspace: {hidden_layers: {low: 0, high: 1.5}}\n", "x.yaml: space.hidden_layers.high:"),
        ("trials: 3\nspace: {learning_rate: {low: 0, high: 0.1, log: true}}\n", "x.yaml: space.learning_rate.low:"),
        ("trials: 3\nspace: {units: {low: 10}}\n", "x.yaml: space.units: a range needs both 'low' and 'high'"),
        ("trials: 3\nspace: {epochs: 100000}\n", "x.yaml: space.epochs.value: Input should be less than or equal"),
        ("trials: 3\nspace: {dropout: {lo: 0.1, high: 0.2}}\n",
         "x.yaml: space.dropout.lo: unknown key (did you mean 'low'?)"),
        ("description: no trials\n", "x.yaml: trials: required key is missing"),
        ("trials: 3\nsampler: {name: tpe, seed: 1}\nenqueue: [{units: 7}]\n",
         "x.yaml: enqueue.0.units: 7 is outside the search space (fixed 512)"),
        ("trials: 3\nenqueue: [{optimiser: adam}]\n",
         "x.yaml: enqueue.0.optimiser: unknown axis (did you mean 'optimizer'?)"),
        ("trials: 3\ntimeout: .inf\n", "x.yaml: timeout: Input should be a finite number"),
    ],
)
def test_bad_key_is_named_with_its_path(tmp_path: Path, text: str, expected: str) -> None:
    # The message names the file and the dotted key path, with the rule that was broken.
    assert expected in _errors(tmp_path, text)


def test_all_problems_of_a_file_are_reported_at_once(tmp_path: Path) -> None:
    message = _errors(tmp_path, "trails: 3\nspace: {dropout: {low: 0.9, high: 0.1}, units: {choices: []}}\n")
    lines = message.splitlines()
    assert len(lines) == 4, lines  # trails unknown, trials missing, dropout.high, units.choices
    assert all(line.startswith(str(tmp_path / "x.yaml") + ": ") for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trials: 3\ntrials: 4\n", "x.yaml:2:1: invalid YAML: duplicate key 'trials' (first on line 1)"),
        ("name: [unclosed\n", "invalid YAML"),
        ("just a string\n", "x.yaml: must be a mapping of keys such as 'trials' and 'space' (got str)"),
        ("", "(got an empty file)"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
    ],
)
def test_yaml_traps_are_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _errors(tmp_path, text)


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match=r"x\.yaml: not UTF-8 text"):
        load_sweep(path)


def test_scientific_notation_is_a_number(tmp_path: Path) -> None:
    # PyYAML alone reads 1e-3 as the string '1e-3'; our loader reads a float.
    path = tmp_path / "lr.yaml"
    path.write_text("trials: 2\nspace: {learning_rate: {low: 1e-4, high: 1E-2, log: true}}\n")
    sweep = load_sweep(path)
    assert sweep.space.learning_rate.low == pytest.approx(1e-4)
    assert isinstance(sweep.space.learning_rate.high, float)
    assert sweep.name == "lr"  # defaults to the file's name


def test_shorthands_and_defaults() -> None:
    sweep = parse_sweep({"name": "s", "trials": 2, "sampler": "random", "space": {"units": [64, 128], "epochs": 5}},
                        "s.yaml")
    assert sweep.sampler.name == "random"
    assert sweep.space.units.choices == [64, 128]
    assert sweep.space.epochs.value == 5
    assert sweep.space.dropout.value == 0.3  # left out: the tutorial's model 4
    assert sweep.pruner.name == "median"
    assert "learning_rate" not in sweep.space.axes()  # left out: each optimizer's Keras default


def test_config_is_frozen() -> None:
    sweep = parse_sweep({"name": "s", "trials": 2}, "s.yaml")
    with pytest.raises(Exception, match="frozen"):
        sweep.trials = 5  # type: ignore[misc]


def test_overrides_are_validated_too() -> None:
    sweep = parse_sweep({"name": "s", "trials": 2}, "s.yaml")
    assert with_overrides(sweep, trials=7, timeout=None).trials == 7
    with pytest.raises(InputError, match=r"sweep .s. \(overrides\): trials: Input should be greater than or equal"):
        with_overrides(sweep, trials=0)


def test_fingerprint_tracks_space_and_data_not_budget() -> None:
    base = parse_sweep({"name": "s", "trials": 2, "space": {"units": [64, 128]}}, "s.yaml")
    more_trials = parse_sweep({"name": "s", "trials": 50, "space": {"units": [64, 128]}}, "s.yaml")
    other_space = parse_sweep({"name": "s", "trials": 2, "space": {"units": [64, 256]}}, "s.yaml")
    other_data = parse_sweep({"name": "s", "trials": 2, "space": {"units": [64, 128]},
                              "data": {"train_size": 100}}, "s.yaml")
    assert base.fingerprint() == more_trials.fingerprint()
    assert base.fingerprint() != other_space.fingerprint()
    assert base.fingerprint() != other_data.fingerprint()


@pytest.mark.parametrize("name", ["quick", "tutorial", "default", "best"])
def test_shipped_sweeps_are_valid(name: str) -> None:
    sweep = load_sweep(name)
    assert sweep.name == name
    axes = sweep.space.axes()
    family = ("conv_blocks", "filters", "pooling", "head_units") if name == "best" else ("hidden_layers", "units")
    for axis in (*family, "dropout", "optimizer", "batch_size", "epochs", "learning_rate"):
        assert axis in axes


def test_the_best_sweep_searches_cnns_and_fits_its_budget() -> None:
    from mnist_sweep.model.costs import training_flops_per_image

    best, default = load_sweep("best"), load_sweep("default")
    assert best.space.architecture.value == "cnn"
    assert best.timeout < best.hard_timeout <= default.hard_timeout  # final has its minutes left
    first, *longer = [{"architecture": "cnn", **dict(e)} for e in best.enqueue]
    # the short first trial costs a fraction of each long one (a model within minutes)
    assert all(training_flops_per_image(first) * first["epochs"] < training_flops_per_image(p) * p["epochs"] / 2
               for p in longer)


def test_tutorial_sweep_enqueues_the_four_tutorial_models() -> None:
    sweep = load_sweep("tutorial")
    layers_units = [(p["hidden_layers"], p["units"], p["optimizer"]) for p in sweep.enqueue]
    assert layers_units == [(0, 64, "sgd"), (2, 64, "sgd"), (2, 128, "sgd"), (2, 512, "adam")]


def test_unknown_sweep_name_suggests_a_close_one() -> None:
    with pytest.raises(InputError, match=r"quik: no such sweep file in \./sweeps/ or among the shipped sweeps "
                                         r"\(did you mean 'quick'\?\)"):
        resolve_sweep("quik")


def test_shipped_json_schema_is_current() -> None:
    shipped = json.loads((REPO / "mnist_sweep" / "sweep" / "shipped" / "sweep.schema.json").read_text())
    assert shipped == sweep_json_schema(), \
        "regenerate: mnist-sweep schema -o mnist_sweep/sweep/shipped/sweep.schema.json"


def test_broken_sweep_exits_2_and_writes_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "sweeps" / "quick.yaml").read_text() + "\nbogus_key_xyz: 1\n")
    db = tmp_path / "bad.db"
    code = main(["run", str(bad), "--storage", f"sqlite:///{db}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {bad}: bogus_key_xyz: unknown key" in err
    assert "Traceback" not in err
    assert not db.exists()


def test_bad_data_path_exits_2_and_writes_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "d.db"
    code = main(["run", str(REPO / "sweeps" / "quick.yaml"), "--data", str(tmp_path / "nowhere"),
                 "--storage", f"sqlite:///{db}"])
    assert code == 2
    assert "nowhere: no such data file or directory" in capsys.readouterr().err
    assert not db.exists()
