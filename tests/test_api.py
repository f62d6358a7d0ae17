"""The public Python API a notebook calls: ``import mnist_sweep as ms``, then sweep -> study -> model -> digits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import optuna
import plotly.graph_objects as go
import pytest
from helpers import TINY_SWEEP

import mnist_sweep as ms
from mnist_sweep._base.paths import safe_name
from mnist_sweep.cli.main import main

FAST_SPACE = {**TINY_SWEEP["space"], "epochs": 1, "units": 16}


def _sweep(**changes) -> ms.SweepConfig:
    return ms.sweep_from_dict({**TINY_SWEEP, "space": FAST_SPACE, **changes})


def test_importing_the_package_loads_no_keras() -> None:
    # The backend must be chosen before Keras is imported: `import mnist_sweep` may not import it.
    code = "import sys, mnist_sweep as ms; ms.load_sweep('quick'); ms.SweepConfig; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_public_name_is_defined_where_the_api_says() -> None:
    import importlib

    groups = {p.parent.name for p in Path(ms.__file__).parent.glob("*/__init__.py")}
    assert set(ms.__all__) == {"__version__", *ms._API}
    for name, module_name in ms._API.items():
        parts = module_name.split(".")
        # a module of a subpackage (mnist_sweep.search.study), or the package's errors
        assert module_name == "mnist_sweep.errors" or (len(parts) == 3 and parts[1] in groups), name
        module = importlib.import_module(module_name)
        value = getattr(ms, name)
        assert value is getattr(module, name), name  # the object the module defines under that name
        if callable(value) and hasattr(value, "__module__"):
            assert value.__module__ == module_name, (name, value.__module__)  # defined there, not re-exported
    assert "run" in dir(ms)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ms.nope  # noqa: B018


def test_a_shipped_sweep_loads_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no sweeps/ here: the package's own copy is used
    assert ms.load_sweep("quick").name == "quick"
    assert set(ms.packaged_sweeps()) == {"quick", "tutorial", "default", "best"}
    # a sweep of the user's own in ./sweeps/ wins over a shipped one of the same name
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "quick.yaml").write_text("trials: 2\n")
    assert ms.load_sweep("quick").trials == 2


def test_overrides_replace_budget_seed_and_data() -> None:
    sweep = ms.with_overrides(ms.load_sweep("quick"), trials=3, timeout=60, seed=7, data="bundled")
    assert (sweep.trials, sweep.timeout, sweep.seed, sweep.data.source) == (3, 60, 7, "bundled")
    with pytest.raises(ms.InputError, match=r"sweep 'quick' \(overrides\): trials"):
        ms.with_overrides(sweep, trials=-1)


def test_run_to_prediction_in_a_few_calls(sqlite_url: str, tmp_path: Path, tiny_dataset, capsys) -> None:
    study = ms.run(_sweep(trials=3), storage=sqlite_url, study_name="api")
    assert isinstance(study, optuna.Study) and len(study.trials) == 3
    out = capsys.readouterr().out
    assert "backend " in out and "3/3" in out  # the backend it used, and one line per trial
    assert study.user_attrs["provenance"]["data"]["sha256"]  # provenance recorded on the study
    frame = ms.trials_frame(study)
    assert list(frame["number"]) == [0, 1, 2]
    figures = ms.report_figures(study)
    assert list(figures) == ["axes", "parallel", "history", "anytime", "importance", "curves", "cost", "confirm",
                             "ladder"]
    assert all(isinstance(f, go.Figure) for f in figures.values())
    config = ms.best_config(study)
    assert config["source"]["trial"] == study.best_trial.number and config["source"]["provenance"]
    final = ms.train_final(config, output_dir=tmp_path / "final")
    assert isinstance(final, ms.FinalModel) and final.members == [] and final.curves_path.is_file()
    assert final.model_path == tmp_path / "final" / "model.keras" and final.metrics_path.is_file()
    assert final.metrics["test_accuracy"] == final.test_accuracy > 0.5
    predictions = ms.predict(final.model, tiny_dataset.x_test[:50].reshape(-1, 28, 28))
    right = np.mean([p.digit == y for p, y in zip(predictions, tiny_dataset.y_test[:50], strict=True)])
    assert right > 0.5 and predictions[0]["probability"] == predictions[0].probability
    uint8 = (tiny_dataset.x_test[:5] * 255).round().astype(np.uint8).reshape(-1, 28, 28)
    assert [p.digit for p in ms.predict(final.model_path, uint8)] == [p.digit for p in predictions[:5]]


def test_predict_names_a_bad_image(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    from mnist_sweep.model.factory import build_model

    model = build_model({"hidden_layers": 0})
    with pytest.raises(ms.InputError, match=r"x\.png: not an image"):
        ms.predict(model, [bad])
    with pytest.raises(ms.InputError, match=r"image 0: an array of shape \(3, 3\), want 28 x 28 or 784"):
        ms.predict(model, np.zeros((3, 3)))


def test_a_study_name_with_a_space_has_one_folder(sqlite_url: str, tmp_path: Path, monkeypatch) -> None:
    # train wrote studies/my-run/metrics.json while report looked in studies/my run/.
    monkeypatch.chdir(tmp_path)
    study = ms.run(_sweep(trials=1), storage=sqlite_url, study_name="my run", progress="off")
    final = ms.train_final(ms.best_config(study))
    assert final.metrics_path == Path("studies") / safe_name("my run") / "metrics.json"
    page = ms.write_report(study)
    assert page == Path("studies") / safe_name("my run") / "report.html"
    assert f"test accuracy <strong>{final.test_accuracy:.4f}</strong>" in page.read_text()


def test_trials_that_keep_failing_stop_the_run_with_the_first_traceback(sqlite_url: str, monkeypatch,
                                                                        capsys) -> None:
    # A bug that fails every trial used to burn the whole target before the run stopped.
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the model factory")

    monkeypatch.setattr("mnist_sweep.search.objective.build_model", broken)
    with pytest.raises(ms.SweepFailed, match="3 trials failed in a row") as caught:
        ms.run(_sweep(trials=20), storage=sqlite_url, study_name="broken")
    assert "RuntimeError: a bug in the model factory" in caught.value.traceback
    assert "objective.py" in caught.value.traceback
    study = ms.load_study(sqlite_url, "broken")
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3
    # the CLI says it in one line, then the traceback, and exits 1
    capsys.readouterr()
    assert main(["run", str(_write(_sweep(trials=20), sqlite_url)), "--storage", sqlite_url, "--study", "b2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: study 'b2': 3 trials failed in a row") and "Traceback" in err


def _write(sweep: ms.SweepConfig, url: str) -> Path:
    import json

    path = Path(url.removeprefix("sqlite:///")).with_name(f"{sweep.name}.json")
    path.write_text(json.dumps(sweep.model_dump(mode="json")))
    return path


def test_a_failure_between_successes_does_not_stop_the_run(sqlite_url: str, monkeypatch) -> None:
    from mnist_sweep.search import objective
    real, calls = objective.build_model, []

    def every_other(*args, **kwargs):
        calls.append(1)
        if len(calls) % 2:
            raise RuntimeError("flaky")
        return real(*args, **kwargs)

    monkeypatch.setattr("mnist_sweep.search.objective.build_model", every_other)
    study = ms.run(_sweep(trials=3), storage=sqlite_url, study_name="flaky", progress="off")
    assert sorted(t.state.name for t in study.trials).count("FAIL") == 3  # replaced, not fatal


def test_ctrl_c_in_a_notebook_fails_the_running_trial_and_raises(sqlite_url: str) -> None:
    # A notebook's "interrupt" is a SIGINT to the kernel's main thread, as here.
    sweep = _sweep(trials=1, space={**FAST_SPACE, "epochs": 5000})  # minutes, unless interrupted
    timer = threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(ms.SweepInterrupted) as caught:
            ms.run(sweep, storage=sqlite_url, study_name="stopped", progress="off")
    finally:
        timer.cancel()
    assert caught.value.signal == signal.SIGINT and isinstance(caught.value, KeyboardInterrupt)
    states = [t.state for t in ms.load_study(sqlite_url, "stopped").trials]
    assert states == [optuna.trial.TrialState.FAIL]  # nothing left RUNNING
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the notebook's handler is back


def test_list_studies_and_load_study(sqlite_url: str) -> None:
    ms.run(_sweep(trials=1), storage=sqlite_url, study_name="a", progress="off")
    ms.run(_sweep(trials=1), storage=sqlite_url, study_name="b", progress="off")
    assert [s.study_name for s in ms.list_studies(sqlite_url)] == ["a", "b"]
    with pytest.raises(ms.InputError, match="holds 2 studies, pick one with --study: a, b"):
        ms.load_study(sqlite_url)
    assert ms.load_study(sqlite_url, "b").study_name == "b"


def test_complete_trials_record_size_latency_and_throughput(sqlite_url: str) -> None:
    study = ms.run(_sweep(trials=2, pruner={"name": "none"}, training={"measure_latency": True}),
                   storage=sqlite_url, study_name="speed", progress="off")
    frame = ms.trials_frame(study).set_index("number")
    for trial in study.trials:
        attrs = trial.user_attrs
        assert attrs["n_params"] > 0
        # one image takes well under a second here; a 1024-image batch goes at many images per second
        assert 0 < attrs["latency_ms_batch1"] < 1000 and attrs["images_per_s_batch1024"] > 1000
        assert frame.loc[trial.number, "latency_ms_batch1"] == attrs["latency_ms_batch1"]
    off = ms.run(_sweep(trials=1, training={"measure_latency": False}), storage=sqlite_url, study_name="nospeed",
                 progress="off")
    assert "latency_ms_batch1" not in off.trials[0].user_attrs
