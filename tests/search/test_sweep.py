"""End to end: `run` on real MNIST subsets into a temporary SQLite; resume, enqueue, divergence, drift."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers import TINY_SWEEP

from mnist_sweep.cli.main import main
from mnist_sweep.search.loop import LoopOptions, run_sweep
from mnist_sweep.sweep.config import parse_sweep
from mnist_sweep.sweep.loader import load_sweep

#: Resident memory a sweep may gain from its 8th to its 24th trial (measured 6 MiB from the 12th to the 36th).
MEMORY_GROWTH_MIB = 40

AXES = {"hidden_layers", "units", "dropout", "optimizer", "batch_size", "epochs", "learning_rate"}


def _study(url: str, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _at_epoch(trial: optuna.trial.FrozenTrial, epoch: int) -> optuna.trial.FrozenTrial:
    """``trial`` as it stood after ``epoch``: RUNNING, with the reports up to then."""
    return optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params=trial.params,
                                     distributions=trial.distributions,
                                     intermediate_values={e: v for e, v in trial.intermediate_values.items()
                                                          if e <= epoch})


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_run_stores_every_trial_with_its_curves(write_sweep, sqlite_url: str, capsys) -> None:
    code = main(["run", str(write_sweep()), "--storage", sqlite_url])
    out = capsys.readouterr().out
    assert code == 0, out
    study = _study(sqlite_url)
    assert len(study.trials) == 3 and set(_states(study)) <= {"COMPLETE", "PRUNED"}
    for trial in study.trials:
        assert AXES <= set(trial.params)  # searched and fixed axes are all recorded
        epochs = trial.params["epochs"]
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))  # one report per epoch
        history = trial.user_attrs["history"]
        assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert history["val_accuracy"] == pytest.approx([trial.intermediate_values[e] for e in range(1, epochs + 1)])
        assert trial.user_attrs["n_params"] > 7000 and len(trial.user_attrs["epoch_seconds"]) == epochs
        assert trial.value == pytest.approx(max(history["val_accuracy"]))
    assert study.best_value > 0.5  # real learning on real digits, even on 2,000 images
    assert out.count(" COMPLETE ") + out.count(" PRUNED ") == 3 and "3/3" in out and "best trial" in out


def test_resume_runs_only_the_missing_trials(write_sweep, sqlite_url: str) -> None:
    path = write_sweep(trials=2)
    assert main(["run", str(path), "--storage", sqlite_url]) == 0
    assert len(_study(sqlite_url).trials) == 2
    # the target is reached: running again adds nothing
    assert main(["run", str(path), "--storage", sqlite_url]) == 0
    assert len(_study(sqlite_url).trials) == 2
    # a higher target extends the same study
    assert main(["run", str(path), "--storage", sqlite_url, "--trials", "3"]) == 0
    assert [t.number for t in _study(sqlite_url).trials] == [0, 1, 2]


def test_failed_trials_are_replaced(write_sweep, sqlite_url: str) -> None:
    sweep = load_sweep(write_sweep(trials=2))
    study = optuna.create_study(study_name="tiny", storage=sqlite_url, direction="maximize")
    study.set_user_attr("sweep_fingerprint", sweep.fingerprint())
    crashed = study.ask()
    study.tell(crashed, state=optuna.trial.TrialState.FAIL)
    run_sweep(sweep, sqlite_url, heartbeat=False)
    assert _states(_study(sqlite_url)).count("FAIL") == 1
    assert sum(s in ("COMPLETE", "PRUNED") for s in _states(_study(sqlite_url))) == 2


def test_changed_space_is_refused(write_sweep, sqlite_url: str, capsys) -> None:
    assert main(["run", str(write_sweep(trials=1)), "--storage", sqlite_url]) == 0
    changed = write_sweep(trials=2, space={"units": [16, 64]})
    assert main(["run", str(changed), "--storage", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert "study 'tiny' was made from a different sweep (space changed)" in err
    assert len(_study(sqlite_url).trials) == 1  # nothing added
    # asking for a new study is the way out
    assert main(["run", str(changed), "--storage", sqlite_url, "--new-study"]) == 0
    assert len(optuna.get_all_study_names(sqlite_url)) == 2


def test_enqueued_trials_run_first(write_sweep, sqlite_url: str) -> None:
    first = {"hidden_layers": 1, "units": 32, "dropout": 0.2, "optimizer": "adam", "epochs": 1,
             "learning_rate": 0.01}
    second = {"hidden_layers": 0, "optimizer": "sgd", "epochs": 2}
    assert main(["run", str(write_sweep(enqueue=[first, second])), "--storage", sqlite_url]) == 0
    trials = _study(sqlite_url).trials
    assert {k: trials[0].params[k] for k in first} == first
    assert {k: trials[1].params[k] for k in second} == second
    # resuming does not enqueue them again
    assert main(["run", str(write_sweep(enqueue=[first, second])), "--storage", sqlite_url, "--trials", "4"]) == 0
    assert sum(t.params == trials[0].params for t in _study(sqlite_url).trials) == 1


def test_diverging_trial_is_pruned_with_its_reason_and_the_sweep_goes_on(write_sweep, sqlite_url: str) -> None:
    space = {"hidden_layers": 2, "units": 64, "dropout": 0.0, "activation": "elu", "optimizer": ["sgd", "adam"],
             "batch_size": 128, "epochs": 2, "learning_rate": {"low": 1e-3, "high": 10.0, "log": True}}
    diverging = {"optimizer": "sgd", "learning_rate": 10.0}
    path = write_sweep(trials=2, space=space, enqueue=[diverging, {"optimizer": "adam", "learning_rate": 0.001}])
    assert main(["run", str(path), "--storage", sqlite_url]) == 0
    bad, good = _study(sqlite_url).trials
    assert bad.state.name == "PRUNED"
    assert bad.user_attrs["fail_reason"].startswith("diverged: loss is ")
    assert bad.user_attrs["fail_reason"].endswith(" at epoch 1")
    assert good.state.name == "COMPLETE" and good.value > 0.5


def test_same_seed_same_results(write_sweep, tmp_path: Path) -> None:
    # A sequential run is reproducible: sampler seed, split seed, and weights seeded per trial.
    path = write_sweep(trials=2)
    values = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        assert main(["run", str(path), "--storage", url]) == 0
        values.append([(t.params, t.value) for t in _study(url).trials])
    assert values[0] == values[1]


def test_storage_from_environment(write_sweep, tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MNIST_SWEEP_STORAGE", url)
    assert main(["run", str(write_sweep(trials=1))]) == 0
    assert optuna.get_all_study_names(url) == ["tiny"]


def test_help_of_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "studies" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--storage" in capsys.readouterr().out


def test_usage_error_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--trials", "many"])
    assert info.value.code == 2


def test_stop_request_fails_the_running_trial_at_the_next_epoch(write_sweep, sqlite_url: str) -> None:
    """A stop signal whose exception was swallowed mid-epoch still stops the trial: ``should_stop``
    is asked after every epoch, and the trial is failed, not finished on a partial curve."""
    sweep = load_sweep(write_sweep(trials=2, space={**load_sweep(write_sweep()).space.model_dump(), "epochs": 50}))
    asked: list[int] = []

    def stop_after_two_epochs() -> bool:
        asked.append(1)
        return len(asked) > 3  # once before the trial, then after epochs 1 and 2

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, sqlite_url, heartbeat=False, options=LoopOptions(should_stop=stop_after_two_epochs))
    (trial,) = _study(sqlite_url).trials
    assert trial.state.name == "FAIL" and trial.user_attrs["fail_reason"].startswith("interrupted")
    assert sorted(trial.intermediate_values) == [1, 2]


def _rss_mib() -> float:
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_flat_over_many_trials(tiny_dataset, tmp_path: Path) -> None:
    # Each trial builds and compiles a new model in the same process; fresh_keras frees the last
    # one's Keras state and compiled functions, so resident memory must not grow trial by trial.
    sweep = parse_sweep({**TINY_SWEEP, "trials": 24, "pruner": {"name": "none"},
                         "space": {**TINY_SWEEP["space"], "epochs": 1}}, "tiny.yaml")
    rss: list[float] = []
    run_sweep(sweep, f"sqlite:///{tmp_path / 'memory.db'}", dataset=tiny_dataset, heartbeat=False,
              options=LoopOptions(on_trial=lambda study, trial: rss.append(_rss_mib())))
    warm, last = rss[7], rss[-1]  # after the first trials every shape and kernel has been seen
    print(f"RSS after trial 8: {warm:.0f} MiB, after trial 24: {last:.0f} MiB")
    assert last - warm < MEMORY_GROWTH_MIB, rss


def test_jax_keeps_compiled_steps_for_the_next_trials(write_sweep, sqlite_url: str, tmp_path: Path) -> None:
    pytest.importorskip("jax")  # the dev extra installs it, so CI runs this
    cache = tmp_path / "xla"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-m", "mnist_sweep", "run", str(write_sweep(trials=1)),
                           "--storage", sqlite_url], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cache.is_dir() and any(name.name.endswith("-cache") for name in cache.iterdir())


def test_a_jax_run_imports_no_tensorflow(tmp_path: Path) -> None:
    # Keras imported TensorFlow when installed (its serialiser asks ``tf.available``, when a model is
    # kept): seconds of start-up and a second framework on the GPU. A TensorFlow imported later
    # (a notebook) is seen again.
    pytest.importorskip("jax")
    code = ("import sys, mnist_sweep as ms\n"
            f"ms.run(ms.with_overrides(ms.load_sweep('quick'), trials=2), storage='sqlite:///{tmp_path}/s.db', "
            "progress=False)\n"
            "assert ms.kept_models(ms.load_study('sqlite:///" + str(tmp_path) + "/s.db', 'quick'))\n"
            "print('tensorflow' in sys.modules)\n"
            "from importlib.util import find_spec\n"
            "if find_spec('tensorflow'):\n"
            "    import tensorflow\n"
            "    from keras.src.utils.module_utils import tensorflow as tf\n"
            "    from mnist_sweep._base.settings import keras_without_tensorflow\n"
            "    keras_without_tensorflow()\n"
            "    assert tf.available\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr


def test_enqueued_trials_are_never_pruned(write_sweep, sqlite_url: str) -> None:
    # A hand-picked config runs whole: at epoch 1 the weak second one is far below the first,
    # which a median pruner with no warm-up would cut, and does cut for a sampled trial.
    strong = {"hidden_layers": 1, "units": 32, "optimizer": "adam", "learning_rate": 0.01, "epochs": 3}
    weak = {"hidden_layers": 1, "units": 16, "optimizer": "sgd", "learning_rate": 0.001, "epochs": 3}
    path = write_sweep(trials=2, enqueue=[strong, weak], space={**TINY_SWEEP["space"], "epochs": 3},
                       pruner={"name": "median", "n_startup_trials": 0, "n_warmup_steps": 0})
    assert main(["run", str(path), "--storage", sqlite_url]) == 0
    first, second = _study(sqlite_url).trials
    assert second.intermediate_values[1] < first.intermediate_values[1]  # the pruner had its reason
    assert second.state.name == "COMPLETE" and sorted(second.intermediate_values) == [1, 2, 3]
    assert optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0).prune(
        _study(sqlite_url), _at_epoch(second, 1))  # the same report, from a sampled trial, is pruned
