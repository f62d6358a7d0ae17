"""Trained models kept per trial: the best K, as Optuna artifacts, with the weights of their best epoch."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import TINY_SWEEP, free_port
from optuna.artifacts import get_all_artifact_meta

import mnist_sweep as ms
from mnist_sweep.search.kept_models import artifact_dir, kept_models, load_kept_model
from mnist_sweep.search.loop import LoopOptions, run_sweep
from mnist_sweep.storage._optuna_internals import study_storage

SPACE = {**TINY_SWEEP["space"], "hidden_layers": 1, "units": [16, 32, 64], "epochs": 3}


def _sweep(trials: int, k: int, **changes) -> ms.SweepConfig:
    return ms.sweep_from_dict({**TINY_SWEEP, "trials": trials, "space": SPACE, "keep": {"models": k}, **changes})


@pytest.fixture(scope="module")
def kept_study(tmp_path_factory, tiny_dataset) -> optuna.Study:
    folder = tmp_path_factory.mktemp("kept")
    return run_sweep(_sweep(6, 2, name="kept"), f"sqlite:///{folder / 's.db'}", dataset=tiny_dataset)


def test_the_best_k_and_the_size_front_keep_a_model(kept_study: optuna.Study) -> None:
    complete = sorted((t for t in kept_study.trials if t.state.name == "COMPLETE"), key=lambda t: (-t.value, t.number))
    kept = kept_models(kept_study)
    size = {t.number: t.user_attrs["n_params"] for t in complete}
    value = {t.number: t.value for t in complete}

    def covered(n: int, by: int) -> bool:  # ``by`` is at least as accurate and at most as large
        return value[by] >= value[n] and size[by] <= size[n]

    numbers = {k.trial for k in kept}
    assert {t.number for t in complete[:2]} <= numbers
    assert all(any(covered(t.number, k) for k in numbers) for t in complete)  # the size front is kept
    for extra in numbers - {t.number for t in complete[:2]}:  # nothing else: each extra is on the front
        assert not any(covered(extra, o) and (value[o], -size[o]) != (value[extra], -size[extra]) for o in value)
    assert [k.trial for k in kept][:2] == [t.number for t in complete[:2]]  # best first
    assert all(k.n_params == kept_study.trials[k.trial].user_attrs["n_params"] for k in kept)
    files = sorted(p.name for p in artifact_dir(kept_study).iterdir())
    assert files == sorted(k.artifact_id for k in kept)  # the displaced ones were deleted: disk stays bounded
    assert not list(artifact_dir(kept_study).glob(".*"))  # no temporary file left behind
    best = kept_study.best_trial
    metas = get_all_artifact_meta(best, storage=study_storage(kept_study))  # what optuna-dashboard lists
    assert [m.artifact_id for m in metas] == [kept[0].artifact_id] and metas[0].filename.endswith(".keras")
    for trial in kept_study.trials:  # pruned, failed or never ranked: nothing kept
        assert ("kept_model" in trial.user_attrs) <= (trial.state.name == "COMPLETE")


def test_a_kept_model_holds_the_weights_of_its_best_epoch(kept_study: optuna.Study, tiny_dataset) -> None:
    best = kept_study.best_trial
    model = load_kept_model(kept_study, best.number)
    predicted = np.argmax(model.predict(tiny_dataset.x_val, verbose=0), axis=1)
    # the accuracy of the best epoch (the trial's value), not the last epoch's
    assert np.mean(predicted == tiny_dataset.y_val) == pytest.approx(best.value, abs=1e-6)
    epoch = best.user_attrs["kept_model"]["epoch"]
    assert best.intermediate_values[epoch] == pytest.approx(best.value)
    assert getattr(model, "optimizer", None) is None  # a model to use: no optimizer state in the file


def test_keep_zero_keeps_nothing(tmp_path: Path, tiny_dataset, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = run_sweep(_sweep(2, 0), f"sqlite:///{tmp_path / 'z.db'}", dataset=tiny_dataset)
    assert kept_models(study) == [] and not (tmp_path / "studies").exists()


def test_an_interrupted_trial_keeps_nothing(tmp_path: Path, tiny_dataset, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    stops = iter([False, False, True])  # asked before the trial, after epoch 1, after epoch 2: stop
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep(1, 3), f"sqlite:///{tmp_path / 'i.db'}", dataset=tiny_dataset,
                  options=LoopOptions(should_stop=lambda: next(stops, True)))
    assert not (tmp_path / "studies").exists()


def test_the_dashboard_serves_kept_models(kept_study: optuna.Study) -> None:
    import threading

    from mnist_sweep.results.dashboard import serve_dashboard
    from mnist_sweep.storage._optuna_internals import storage_url_of, study_id, trial_id

    url = storage_url_of(kept_study)
    port = free_port()
    threading.Thread(target=serve_dashboard, args=(url,), kwargs={"port": port, "out": open("/dev/null", "w")},
                     daemon=True).start()
    kept = kept_models(kept_study)[0]
    sid = study_id(kept_study)
    tid = next(trial_id(t) for t in kept_study.trials if t.number == kept.trial)
    body = _get(f"http://127.0.0.1:{port}/artifacts/{sid}/{tid}/{kept.artifact_id}")
    assert body[:2] == b"PK"  # a .keras file is a zip archive
    assert json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{sid}?after=0"))["trials"]



def _get(address: str) -> bytes:
    import time

    for _ in range(50):
        try:
            with urllib.request.urlopen(address, timeout=5) as response:
                return response.read()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no answer from {address}")


def test_final_chooses_on_validation_and_tests_once(kept_study: optuna.Study, tiny_dataset, tmp_path: Path,
                                                    capsys) -> None:
    from mnist_sweep.cli.main import main
    from mnist_sweep.storage._optuna_internals import storage_url_of

    code = main(["final", "--study", kept_study.study_name, "--storage", storage_url_of(kept_study),
                 "-o", str(tmp_path / "final")])
    out = capsys.readouterr().out
    assert code == 0, out
    metrics = json.loads((tmp_path / "final" / "metrics.json").read_text())
    kept = kept_models(kept_study)
    # the candidates are the best kept model and the averages of the best 2..K; the best on validation wins
    assert list(metrics["candidates"]) == [f"top {n}" for n in range(1, len(kept) + 1)]
    assert metrics["validation_accuracy"] == pytest.approx(max(metrics["candidates"].values()), abs=1e-6)
    assert metrics["members"] == [k.trial for k in kept[: len(metrics["members"])]]
    assert {"test_accuracy", "best_member_test_accuracy", "seconds", "provenance"} <= set(metrics)
    assert f"test accuracy: {metrics['test_accuracy']:.4f}" in out
    predictions = ms.predict(tmp_path / "final" / "model.keras", tiny_dataset.x_test[:200].reshape(-1, 28, 28))
    right = np.mean([p.digit == y for p, y in zip(predictions, tiny_dataset.y_test[:200], strict=True)])
    assert right == pytest.approx(metrics["test_accuracy"], abs=0.08)  # the saved model is the one tested


def test_an_ensemble_averages_its_members(kept_study: optuna.Study, tiny_dataset, tmp_path: Path) -> None:
    from mnist_sweep.final.ensemble import _average
    from mnist_sweep.model.saving import load_model

    first, second = (load_kept_model(kept_study, k.trial) for k in kept_models(kept_study)[:2])
    x = tiny_dataset.x_val[:50]
    expected = (first.predict(x, verbose=0) + second.predict(x, verbose=0)) / 2
    ensemble = _average([first, second], [1, 2])
    ensemble.save(tmp_path / "e.keras")
    np.testing.assert_allclose(load_model(tmp_path / "e.keras").predict(x, verbose=0), expected, rtol=1e-5)


def test_build_final_returns_the_final_model_train_final_returns(kept_study: optuna.Study, tmp_path: Path) -> None:
    final = ms.build_final(kept_study, tmp_path / "one", k=1)
    assert type(final) is ms.FinalModel  # one result type for both ways to make the final model
    assert final.members == [kept_models(kept_study)[0].trial] == final.metrics["members"]
    assert final.directory == tmp_path / "one" and final.model_path.is_file() and final.metrics_path.is_file()
    assert final.curves_path is None and final.test_loss is None and final.seconds > 0
    assert final.test_accuracy == final.metrics["test_accuracy"]


def test_final_without_kept_models_is_one_line_exit_2(tmp_path: Path, tiny_dataset, capsys) -> None:
    from mnist_sweep.cli.main import main

    url = f"sqlite:///{tmp_path / 'n.db'}"
    run_sweep(_sweep(1, 0), url, dataset=tiny_dataset)
    assert main(["final", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kept no trained model" in err


def test_final_with_a_kept_file_gone_is_one_line_exit_2(tmp_path: Path, tiny_dataset, capsys, monkeypatch) -> None:
    from mnist_sweep.cli.main import main

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    study = run_sweep(_sweep(1, 1, name="gone"), url, dataset=tiny_dataset)
    (kept,) = kept_models(study)
    (artifact_dir(study) / kept.artifact_id).unlink()  # deleted by hand, or the folder is on another machine
    capsys.readouterr()
    assert main(["final", "--study", "gone", "--storage", url, "-o", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'gone'" in err and f"trial {kept.trial}" in err and kept.artifact_id in err, err
    assert not (tmp_path / "f").exists()  # nothing half-written


def test_retained_keeps_the_best_k_and_each_front() -> None:
    from mnist_sweep.search.kept_models import KeptModel, retained

    models = [KeptModel(0, "a", 0.99, 9, 1000, 0.5), KeptModel(1, "b", 0.98, 9, 100, 0.4),
              KeptModel(2, "c", 0.97, 9, 200, 0.1), KeptModel(3, "d", 0.96, 9, 300, 0.3),
              KeptModel(4, "e", 0.985, 9, 2000, 0.9)]
    assert [m.trial for m in retained(models, 1, pareto=False)] == [0]
    # 1 is the smallest, 2 the fastest; 3 is beaten on both by 1 and 2; 4 is out of the best 1
    assert [m.trial for m in retained(models, 1, pareto=True)] == [0, 1, 2]
    assert retained(models, 0, pareto=True) == []


def test_final_within_a_parameter_budget(kept_study: optuna.Study, tmp_path: Path, capsys) -> None:
    from mnist_sweep.cli.main import main
    from mnist_sweep.storage._optuna_internals import storage_url_of

    kept = kept_models(kept_study)
    smallest = min(k.n_params for k in kept)
    args = ["final", "--study", kept_study.study_name, "--storage", storage_url_of(kept_study)]
    assert main([*args, "-o", str(tmp_path / "small"), "--max-params", str(smallest)]) == 0, capsys.readouterr()
    metrics = json.loads((tmp_path / "small" / "metrics.json").read_text())
    best_small = max((k for k in kept if k.n_params == smallest), key=lambda k: k.value)
    assert metrics["members"] == [best_small.trial] and metrics["n_params"] == smallest
    assert metrics["budget"] == {"max_params": smallest, "max_latency_ms": None}
    assert metrics["latency_ms_batch1"] > 0 and metrics["images_per_s_batch1024"] > 0
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "none"), "--max-params", str(smallest - 1)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-params" in err and f"n_params {smallest}" in err
    assert not (tmp_path / "none").exists()  # nothing half-written
