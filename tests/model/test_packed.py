"""Packed training (model/packed.py): a member trains as it would alone, a stopped member leaves the
others unchanged, written-back weights predict what the history says, mixed structures are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_sweep.model.factory import build_model
from mnist_sweep.model.packed import PackedTrainer, pack_key
from mnist_sweep.model.training import fit, fresh_keras

BASE = {"hidden_layers": 2, "units": 32, "dropout": 0.2, "batch_size": 64, "epochs": 3, "learning_rate": 0.003}
#: Members 1 and 2 differ from member 0 in everything a member may differ in.
OTHERS = [{"learning_rate": 0.01, "dropout": 0.0}, {"learning_rate": 0.0007, "dropout": 0.45}]


def _models(dataset, members: list[dict], seeds: list[int] | None = None, **changes) -> list:
    steps = len(dataset.x_train) // BASE["batch_size"]
    out = []
    for n, extra in enumerate(members):
        fresh_keras((seeds or list(range(len(members))))[n])
        out.append(build_model({**BASE, **changes, **extra}, steps_per_epoch=steps))
    return out


def _trainer(dataset, models, **kwargs) -> PackedTrainer:
    ds = dataset
    return PackedTrainer(models, ds.x_train, ds.y_train, ds.x_val, ds.y_val,
                         batch_size=kwargs.pop("batch_size", BASE["batch_size"]),
                         epochs=kwargs.pop("epochs", BASE["epochs"]), **kwargs)


def _train(trainer: PackedTrainer, epochs: int) -> None:
    for _ in range(epochs):
        trainer.run_epoch()


def test_pack_key_separates_structures_not_values() -> None:
    key = pack_key(BASE)
    for same in ({"learning_rate": 0.1}, {"dropout": 0.4}, {"weight_decay": 1e-3}, {"augment_shift": 0.0}):
        assert pack_key({**BASE, **same}) == key
    assert pack_key({**BASE, "augment_shift": 1.0}) == pack_key({**BASE, "augment_rotation": 8.0})  # magnitudes
    for other in ({"units": 64}, {"hidden_layers": 1}, {"units_l1": 16}, {"activation": "tanh"}, {"batch_norm": True},
                  {"deskew": True}, {"augment_shift": 1.0}, {"augment_elastic": 30.0}, {"input_dropout": 0.1},
                  {"optimizer": "sgd"}, {"lr_schedule": "cosine"}, {"batch_size": 128}, {"epochs": 4}):
        assert pack_key({**BASE, **other}) != key, other


@pytest.mark.parametrize("changes", [
    {},
    {"lr_schedule": "cosine"},
    {"optimizer": "adamw", "weight_decay": 0.01},
    {"batch_norm": True, "augment_shift": 2.0, "input_dropout": 0.1, "optimizer": "nadam"},
], ids=["adam", "cosine", "adamw-decay", "batchnorm-augment-nadam"])
def test_a_member_takes_the_steps_keras_fit_takes(tiny_dataset, changes) -> None:
    """Unshuffled, member 1 of a pack (member 0 differs in rate, dropout and decay) ends with the weights
    ``model.fit`` gives the same model from the same seed: the same steps, dropout masks and updates."""
    import jax.numpy as jnp

    ds, n = tiny_dataset, 31 * BASE["batch_size"]
    fresh_keras(0)
    alone = build_model({**BASE, **changes}, steps_per_epoch=31)
    alone.fit(ds.x_train[:n], ds.y_train[:n], batch_size=BASE["batch_size"], epochs=2, shuffle=False, verbose=0)
    other = {"learning_rate": 0.02, "dropout": 0.4, "weight_decay": 0.1 if "weight_decay" in changes else 0.0}
    models = _models(ds, [other, {}], seeds=[5, 0], **changes)
    trainer = PackedTrainer(models, ds.x_train[:n], ds.y_train[:n], ds.x_val, ds.y_val, batch_size=BASE["batch_size"],
                            epochs=2)
    trainer._order = lambda: jnp.arange(n)  # fit(shuffle=False)'s order
    _train(trainer, 2)
    packed = trainer.write_back(1, best=False).get_weights()
    for want, got in zip(alone.get_weights(), packed, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.fixture(scope="module")
def pack_of_three(tiny_dataset):
    trainer = _trainer(tiny_dataset, _models(tiny_dataset, [{}, *OTHERS]))
    _train(trainer, BASE["epochs"])
    return trainer


def test_a_packed_member_learns_like_the_same_trial_trained_alone(tiny_dataset, pack_of_three) -> None:
    ds = tiny_dataset
    (alone,) = _models(ds, [{}])
    fitted = fit(alone, ds.x_train, ds.y_train, ds.x_val, ds.y_val, batch_size=BASE["batch_size"],
                 epochs=BASE["epochs"], drop_remainder=True)
    packed = pack_of_three.result(0)
    assert packed.epochs_run == fitted.epochs_run == BASE["epochs"] and packed.stop_reason is None
    assert sorted(packed.history) == sorted(fitted.history)
    # the shuffling differs (on the device, shared by the members), so close, not equal
    assert abs(max(packed.history["val_accuracy"]) - max(fitted.history["val_accuracy"])) <= 0.015
    assert packed.history["val_loss"][-1] == pytest.approx(fitted.history["val_loss"][-1], rel=0.1)
    # alone on the engine, member 0 trains exactly as in the pack
    one = _trainer(ds, _models(ds, [{}]))
    _train(one, BASE["epochs"])
    np.testing.assert_allclose(one.result(0).history["val_loss"], packed.history["val_loss"], rtol=1e-6)


def test_stopping_a_member_leaves_the_others_unchanged(tiny_dataset, pack_of_three) -> None:
    trainer = _trainer(tiny_dataset, _models(tiny_dataset, [{}, *OTHERS]), check=lambda: None)
    first = trainer.run_epoch()
    trainer.stop(1)
    rest = [trainer.run_epoch() for _ in range(BASE["epochs"] - 1)]
    assert all(epoch[1] is None for epoch in rest) and first[1] is not None
    stopped = trainer.result(1)
    assert stopped.epochs_run == 1 and stopped.stop_reason == "stopped by hook"
    for i in (0, 2):
        for key, values in pack_of_three.result(i).history.items():
            np.testing.assert_allclose(trainer.result(i).history[key], values, rtol=1e-6, atol=1e-7)
    assert trainer.run_epoch() == [None, None, None]  # every epoch ran


def test_a_shrunk_pack_trains_its_members_on_unchanged(tiny_dataset, pack_of_three) -> None:
    """Four members, two stopped: the other two move to a pack of two (a new program), results unchanged."""
    trainer = _trainer(tiny_dataset, _models(tiny_dataset, [{}, *OTHERS, {"learning_rate": 0.05}]))
    trainer.run_epoch()
    trainer.stop(1)
    trainer.stop(3, "failed")
    trainer.shrink = "always"  # whatever the compilation costs
    trainer.run_epoch()
    assert len(trainer._state[3]) == 2
    _train(trainer, BASE["epochs"] - 2)
    assert trainer._state is None  # every member has left: the device's copies are freed
    for i in (0, 2):
        np.testing.assert_allclose(trainer.result(i).history["val_loss"], pack_of_three.result(i).history["val_loss"],
                                   rtol=1e-5)
    assert trainer.result(3).stop_reason == "failed"


@pytest.mark.parametrize(("cpu", "group"), [(False, None), (True, 1), (True, 2)],
                         ids=["accelerator-loop", "members-one-by-one", "members-in-pairs"])
def test_every_program_layout_trains_alike(tiny_dataset, pack_of_three, monkeypatch, cpu, group) -> None:
    """The accelerator's program (a loop of dynamic length, every member in lockstep) and the CPU's with
    members in groups (one by one; pairs and a remainder) train each member as the CPU's lockstep does."""
    from mnist_sweep.model import _packed_program

    monkeypatch.setattr(_packed_program, "on_cpu", lambda: cpu)
    if group is not None:
        (model,) = _models(tiny_dataset, [{}])
        model.optimizer.build(model.trainable_variables)
        monkeypatch.setattr(_packed_program, "CPU_GROUP_BYTES", group * _packed_program.member_bytes(model))
    trainer = _trainer(tiny_dataset, _models(tiny_dataset, [{}, *OTHERS]), check=lambda: None)
    assert trainer._program.unroll == (2 if cpu else 1) and trainer._program.group == (group or 1 << 30)
    _train(trainer, BASE["epochs"])
    for i in range(3):
        np.testing.assert_allclose(trainer.result(i).history["val_loss"], pack_of_three.result(i).history["val_loss"],
                                   rtol=1e-5)


def test_written_back_weights_predict_what_the_history_says(tiny_dataset, pack_of_three) -> None:
    ds = tiny_dataset
    for i in range(3):
        result = pack_of_three.result(i)
        best = max(result.history["val_accuracy"])
        assert result.best_epoch == result.history["val_accuracy"].index(best) + 1
        model = pack_of_three.write_back(i, best=True)
        assert model.evaluate(ds.x_val, ds.y_val, verbose=0)[1] == pytest.approx(best, abs=1e-6)
        fresh_keras(99)
        copy = build_model({**BASE, **([{}, *OTHERS][i])}, steps_per_epoch=31)
        copy.set_weights(result.best_weights)  # what keep_model does with fit's best weights
        assert copy.evaluate(ds.x_val, ds.y_val, verbose=0)[1] == pytest.approx(best, abs=1e-6)
        last = pack_of_three.write_back(i, best=False)
        assert last.evaluate(ds.x_val, ds.y_val, verbose=0)[1] == pytest.approx(result.history["val_accuracy"][-1],
                                                                                abs=1e-6)


@pytest.mark.parametrize("other", [{"units": 16}, {"activation": "tanh"}, {"optimizer": "sgd"},
                                   {"augment_shift": 1.0}, {"lr_schedule": "cosine"}])
def test_a_pack_of_different_structures_is_refused(tiny_dataset, other) -> None:
    with pytest.raises(ValueError, match="structure"):
        _trainer(tiny_dataset, _models(tiny_dataset, [{}, other]))


def test_a_diverging_member_is_stopped_and_flagged_the_others_go_on(tiny_dataset) -> None:
    trainer = _trainer(tiny_dataset, _models(tiny_dataset, [{}, {"optimizer": "adam", "learning_rate": 50.0}]),
                       epochs=2)
    first = trainer.run_epoch()
    assert first[1] is not None and trainer.result(1).diverged
    assert trainer.result(1).stop_reason.startswith("diverged: loss is")
    second = trainer.run_epoch()
    assert second[1] is None and math.isfinite(second[0]["loss"]) and trainer.result(0).stop_reason is None


def test_check_runs_between_compiled_calls_and_may_abort(tiny_dataset) -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise TimeoutError("past the trial's timeout")

    trainer = _trainer(tiny_dataset, _models(tiny_dataset, [{}]), batch_size=16, check=check)
    with pytest.raises(TimeoutError):
        trainer.run_epoch()  # 125 batches: 5 calls of 25
    assert len(calls) == 2
