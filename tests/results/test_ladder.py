"""The accuracy ladder (``report_figures(study)["ladder"]``) and the training FLOPs behind its compute."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from mnist_sweep.model.costs import forward_macs, training_flops_per_image
from mnist_sweep.results.figures import report_figures
from mnist_sweep.results.ladder import RUNGS, study_pflop
from mnist_sweep.search.study import FINAL_ATTR


def test_a_cnn_s_macs_are_its_convolutions_and_head() -> None:
    cnn = {"architecture": "cnn", "conv_blocks": 2, "filters": 8, "kernel_size": 3, "pooling": "max", "head_units": 32}
    # 28x28: 9*1*8, 9*8*8 at 28x28; 14x14: 9*8*16, 9*16*16; head 7*7*16*32; 32*10
    assert forward_macs(cnn) == [28 * 28 * 72, 28 * 28 * 576, 14 * 14 * 1152, 14 * 14 * 2304, 7 * 7 * 16 * 32, 320]
    strided = forward_macs({**cnn, "pooling": "none", "conv_blocks": 1})
    assert strided[1] == 14 * 14 * 576  # the second convolution is the stride-2 one
    assert training_flops_per_image({"hidden_layers": 2, "units": 512}) == 3209216


def _trial(number: int, value: float, params: dict, epochs: int) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, params=params,
                                     distributions={k: CategoricalDistribution([v]) for k, v in params.items()},
                                     user_attrs={"epochs_run": epochs})


def test_the_ladder_places_the_study_among_the_published_rungs_with_its_compute() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("sweep", {"data": {"train_size": 1000}})
    study.add_trial(_trial(0, 0.991, {"hidden_layers": 1, "units": 64}, 3))
    study.add_trial(_trial(1, 0.995, {"architecture": "cnn", "filters": 8, "conv_blocks": 1}, 2))
    fig = report_figures(study)["ladder"]
    names = [trace.name for trace in fig.data]
    assert len(names) == len(RUNGS) + 1 and "this study: best validation accuracy" in names
    ours = fig.data[names.index("this study: best validation accuracy")]
    assert list(ours.x) == [99.5]
    pflop = study_pflop(study.trials, 1000)
    expected = (training_flops_per_image({"hidden_layers": 1, "units": 64}) * 3
                + training_flops_per_image({"architecture": "cnn", "filters": 8, "conv_blocks": 1}) * 2) * 1000 / 1e15
    assert abs(pflop - expected) < 1e-15 and f"{pflop:.3g} PFLOP" in ours.hovertext
    assert all(trace.hovertext for trace in fig.data)  # each rung with its source
    study.set_user_attr(FINAL_ATTR, {"test_accuracy": 0.9962, "members": [1]})
    names = [trace.name for trace in report_figures(study)["ladder"].data]
    assert "this study: final model, test accuracy" in names
