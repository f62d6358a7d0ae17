"""Packed trials: trials of one structure trained as one program, each still an ordinary Optuna trial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import TINY_SWEEP

from mnist_sweep.cli.args import build_parser
from mnist_sweep.errors import SweepFailed
from mnist_sweep.model.packed import PackedTrainer, pack_key
from mnist_sweep.search.kept_models import kept_models, load_kept_model
from mnist_sweep.search.loop import LoopOptions, run_sweep
from mnist_sweep.sweep.config import SweepConfig, sweep_from_dict, with_overrides

STRUCTURE = ("hidden_layers", "units", "optimizer", "batch_size", "epochs")

#: One structure, learning rate and dropout searched: every trial of it can share a pack.
FIXED = {"hidden_layers": 1, "units": 32, "optimizer": "adam", "batch_size": 128, "epochs": 3,
         "dropout": {"low": 0.0, "high": 0.3}, "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}

#: Four hand-picked configs of that structure, run first (never pruned).
CONFIGS = [{"dropout": d, "learning_rate": lr} for d, lr in [(0.0, 3e-3), (0.2, 1e-2), (0.1, 1e-3), (0.3, 5e-3)]]


def _sweep(name: str, pack: int, **changes) -> SweepConfig:
    return sweep_from_dict({**TINY_SWEEP, "name": name, "pack": {"members": pack}, **changes})


def _done(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


@pytest.fixture(scope="module")
def bigger_dataset():
    """8,000 training images: enough that two shuffles of one config end within a point of each other."""
    from mnist_sweep.data.dataset import load_dataset
    from mnist_sweep.sweep.config import DataConfig

    return load_dataset(DataConfig(validation_size=1000, train_size=8000))


@pytest.fixture(scope="module")
def alone_and_packed(tmp_path_factory, bigger_dataset) -> dict[int, optuna.Study]:
    """The four configs, one at a time and as one pack (same trial numbers, so the same seeds)."""
    folder = tmp_path_factory.mktemp("packs")
    studies = {}
    for k in (1, 4):
        sweep = _sweep(f"p{k}", k, trials=4, space=FIXED, enqueue=CONFIGS, keep={"models": 4, "pareto": False},
                       data={"validation_size": 1000, "train_size": 8000})
        studies[k] = run_sweep(sweep, f"sqlite:///{folder / f'p{k}.db'}", dataset=bigger_dataset)
    return studies


def test_a_packed_sweep_reaches_its_target_with_packs_of_one_structure(sqlite_url: str, tiny_dataset) -> None:
    lines: list[int] = []
    study = run_sweep(_sweep("tiny", 4, trials=6, training={"measure_latency": True}), sqlite_url,
                      dataset=tiny_dataset, options=LoopOptions(on_trial=lambda s, t: lines.append(t.number)))
    trials = study.trials
    assert len(_done(study)) == 6 and len(trials) == 6  # nothing failed, none surplus, nothing left queued
    assert sorted(lines) == list(range(6))  # one progress line per member
    assert [t.user_attrs["pack"] for t in trials] == [[0, 1, 2, 3]] * 4 + [[4, 5]] * 2  # 4, then the 2 left
    for pack in ([0, 1, 2, 3], [4, 5]):
        first = trials[pack[0]]
        assert "pack_of" not in first.user_attrs  # sampled by TPE; the others with its structure fixed
        for n in pack[1:]:
            assert trials[n].user_attrs["pack_of"] == first.number
            assert {a: trials[n].params[a] for a in STRUCTURE} == {a: first.params[a] for a in STRUCTURE}
            assert pack_key(trials[n].params) == pack_key(first.params)
        assert len({trials[n].params["learning_rate"] for n in pack}) == len(pack)  # the rest is sampled
        # one structure, one network shape: its inference figures are measured once and shared
        assert len({trials[n].user_attrs["latency_ms_batch1"] for n in pack}) == 1
    for t in trials:  # what a trial alone records
        epochs = t.params["epochs"]
        history = t.user_attrs["history"]
        assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        assert history["val_accuracy"] == pytest.approx([t.intermediate_values[e] for e in range(1, epochs + 1)])
        assert t.user_attrs["epochs_run"] == epochs == len(t.user_attrs["epoch_seconds"])
        assert t.user_attrs["fit_seconds"] > 0 and t.user_attrs["n_params"] > 7000
        assert t.value == pytest.approx(max(history["val_accuracy"]))


def test_a_packed_member_learns_as_it_does_alone(alone_and_packed) -> None:
    alone, packed = alone_and_packed[1], alone_and_packed[4]
    assert all("pack" not in t.user_attrs for t in alone.trials)  # pack: 1 is the one-at-a-time path
    assert [t.user_attrs["pack"] for t in packed.trials] == [[0, 1, 2, 3]] * 4
    for a, p in zip(alone.trials, packed.trials, strict=True):
        assert a.params == p.params and a.state.name == p.state.name == "COMPLETE"
        # same seed, same config; the batches come in another order (a pack shares one), so close, not equal
        assert p.value == pytest.approx(a.value, abs=0.015)


def test_each_members_kept_model_reloads_and_predicts_as_its_trial_recorded(alone_and_packed,
                                                                            bigger_dataset) -> None:
    packed = alone_and_packed[4]
    kept = kept_models(packed)
    assert sorted(k.trial for k in kept) == [0, 1, 2, 3]
    for k in kept:
        trial = packed.trials[k.trial]
        model = load_kept_model(packed, k.trial)
        predicted = np.argmax(model.predict(bigger_dataset.x_val, verbose=0), axis=1)
        assert np.mean(predicted == bigger_dataset.y_val) == pytest.approx(trial.value, abs=2e-3)
        assert trial.intermediate_values[k.epoch] == pytest.approx(trial.value)  # its best epoch's weights


def test_a_pruned_member_leaves_the_others_unchanged(tmp_path: Path, tiny_dataset, monkeypatch) -> None:
    sweep = _sweep("prune", 4, trials=4, space=FIXED)
    histories = {}
    for run in ("whole", "pruned"):
        if run == "pruned":  # trial 1 (sampled, so prunable) is pruned after its first epoch
            monkeypatch.setattr(optuna.pruners.NopPruner, "prune", lambda self, study, trial: trial.number == 1)
        study = run_sweep(sweep, f"sqlite:///{tmp_path / run}.db", dataset=tiny_dataset)
        histories[run] = {t.number: t.user_attrs["history"] for t in study.trials}
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"]
    pruned = study.trials[1]
    assert pruned.user_attrs["epochs_run"] == 1 and sorted(pruned.intermediate_values) == [1]
    assert histories["pruned"][1]["val_accuracy"] == histories["whole"][1]["val_accuracy"][:1]
    for n in (0, 2, 3):
        for key, values in histories["whole"][n].items():
            assert histories["pruned"][n][key] == pytest.approx(values, abs=1e-6)


def test_a_crashed_pack_fails_every_member_with_its_reason_and_counts_once(sqlite_url: str, tiny_dataset,
                                                                           monkeypatch) -> None:
    def crash(self):
        raise RuntimeError("the program crashed")

    monkeypatch.setattr(PackedTrainer, "run_epoch", crash)
    with pytest.raises(SweepFailed, match="the program crashed"):
        run_sweep(_sweep("crash", 4, trials=6, space=FIXED), sqlite_url, dataset=tiny_dataset)
    study = optuna.load_study(study_name="crash", storage=sqlite_url)
    # three failures in a row stop the run: three packs (one error each), not three members of one
    assert [t.state.name for t in study.trials] == ["FAIL"] * 12
    assert {t.user_attrs["fail_reason"] for t in study.trials} == {"RuntimeError: the program crashed"}


def test_a_stop_request_fails_every_member_as_interrupted(sqlite_url: str, tiny_dataset) -> None:
    asked = []

    def stop() -> bool:  # asked before the pack, then by each member after each epoch: stop at the 2nd member
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep("stop", 4, trials=4, space=FIXED), sqlite_url, dataset=tiny_dataset,
                  options=LoopOptions(should_stop=stop))
    study = optuna.load_study(study_name="stop", storage=sqlite_url)
    assert [t.state.name for t in study.trials] == ["FAIL"] * 4  # nothing left RUNNING
    assert {t.user_attrs["fail_reason"] for t in study.trials} == {"interrupted (KeyboardInterrupt)"}


def test_pack_of_one_is_the_one_at_a_time_path(sqlite_url: str, tiny_dataset, monkeypatch) -> None:
    def no_pack(*args, **kwargs):
        raise AssertionError("pack: {members: 1} must not pack")

    monkeypatch.setattr("mnist_sweep.search.loop.run_pack", no_pack)
    study = run_sweep(_sweep("one", 1, trials=2), sqlite_url, dataset=tiny_dataset)
    assert len(_done(study)) == 2 and all("pack" not in t.user_attrs for t in study.trials)
    assert with_overrides(_sweep("one", 1, trials=2), pack=8).pack.members == 8
    assert build_parser().parse_args(["run", "quick", "--pack", "4"]).pack == 4
    assert build_parser().parse_args(["worker", "quick", "--pack", "2"]).pack == 2
    assert build_parser().parse_args(["run", "quick", "--pack", "auto"]).pack == "auto"


def test_the_default_pack_suits_the_device(sqlite_url: str, tiny_dataset, monkeypatch) -> None:
    default = sweep_from_dict({**TINY_SWEEP}).pack
    assert default.members == "auto" and default.on_device(accelerator=False) == 1
    assert default.on_device(accelerator=True) == default.ACCELERATOR_MEMBERS > 1
    assert with_overrides(_sweep("one", 1, trials=2), pack="auto").pack.on_device(True) == default.ACCELERATOR_MEMBERS

    class Packed(Exception):
        pass

    def run_pack(*args):
        raise Packed(args[-1])

    monkeypatch.setattr("mnist_sweep.search.loop.run_pack", run_pack)
    run_sweep(sweep_from_dict({**TINY_SWEEP, "trials": 2}), sqlite_url, dataset=tiny_dataset)  # on this CPU: alone
    monkeypatch.setattr("mnist_sweep.search.loop.packs_on_accelerator", lambda: True)  # as on a GPU
    with pytest.raises(Packed) as packed:
        run_sweep(sweep_from_dict({**TINY_SWEEP, "name": "gpu", "trials": 20}), sqlite_url, dataset=tiny_dataset)
    assert packed.value.args == (default.ACCELERATOR_MEMBERS,)


def test_the_grid_sampler_is_asked_and_grouped(sqlite_url: str, tiny_dataset) -> None:
    space = {**FIXED, "epochs": 1, "dropout": [0.0, 0.2], "learning_rate": [0.001, 0.01], "units": [16, 32]}
    study = run_sweep(_sweep("grid", 4, trials=8, space=space, sampler="grid"), sqlite_url, dataset=tiny_dataset)
    assert len(_done(study)) == 8 == len(study.trials)  # no partly fixed trial: the grid sampler cannot fill one
    assert {tuple(sorted(t.params.items())) for t in study.trials} == {  # the whole grid, once
        tuple(sorted({**study.trials[0].params, "dropout": d, "learning_rate": lr, "units": u}.items()))
        for d in (0.0, 0.2) for lr in (0.001, 0.01) for u in (16, 32)}
    assert any(len(t.user_attrs.get("pack", [])) > 1 for t in study.trials)  # some of one width trained together


def test_a_diverging_member_is_pruned_with_its_reason_and_the_others_go_on(sqlite_url: str, tiny_dataset) -> None:
    space = {"hidden_layers": 2, "units": 64, "dropout": 0.0, "activation": "elu", "optimizer": "sgd",
             "batch_size": 128, "epochs": 2, "learning_rate": {"low": 1e-3, "high": 10.0, "log": True}}
    sweep = _sweep("diverge", 2, trials=2, space=space, enqueue=[{"learning_rate": 10.0}, {"learning_rate": 0.05}])
    bad, good = run_sweep(sweep, sqlite_url, dataset=tiny_dataset).trials
    assert bad.user_attrs["pack"] == good.user_attrs["pack"] == [0, 1]
    assert bad.state.name == "PRUNED" and bad.user_attrs["fail_reason"].startswith("diverged: loss is ")
    assert bad.user_attrs["fail_reason"].endswith(" at epoch 1") and bad.intermediate_values == {}
    assert good.state.name == "COMPLETE" and good.user_attrs["epochs_run"] == 2 and good.value > 0.5


PRUNERS = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=1),
           "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=6)}


@pytest.mark.parametrize("storage", ["sqlite", "memory"])
@pytest.mark.parametrize("pruner", sorted(PRUNERS))
def test_a_pack_epoch_writes_once_and_prunes_as_each_trial_would(storage: str, pruner: str, tmp_path: Path) -> None:
    from mnist_sweep.search._pack_storage import PackEpochStorage

    values = (0.4, 0.65, 0.75, 0.95, 0.52, 0.58)
    decisions = {}
    for way in ("member by member", "one write, one read"):
        url = f"sqlite:///{tmp_path / way}.db" if storage == "sqlite" else None
        study = optuna.create_study(study_name="same", storage=url, direction="maximize", pruner=PRUNERS[pruner]())
        for value in (0.5, 0.7, 0.9, 0.6, 0.8):  # finished trials the pruner compares with
            done = study.ask()
            for step in range(1, 7):
                done.report(value, step)
                done.should_prune()  # successive halving records its rungs here
            study.tell(done, value)
        running, epoch, decisions[way] = [study.ask() for _ in values], PackEpochStorage(study), []
        for step in range(1, 7):
            if way == "member by member":
                for trial, value in zip(running, values, strict=True):
                    trial.report(value, step)
                decisions[way].append([trial.should_prune() for trial in running])
            else:
                epoch.report([(trial, step, value) for trial, value in zip(running, values, strict=True)])
                decisions[way].append([epoch.should_prune(trial) for trial in running])
        assert [t.intermediate_values for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))] == [
            dict.fromkeys(range(1, 7), v) for v in values]  # every member's value at every step
    assert decisions["one write, one read"] == decisions["member by member"]
    assert any(any(epoch) for epoch in decisions["member by member"])  # the pruner had something to prune
