"""Live progress inside a trial: a line updated in place in a terminal, tqdm in a notebook, plain lines elsewhere."""

from __future__ import annotations

import io
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mnist_sweep.search.progress import EpochProgress, TrialLines, format_duration, print_summary, short_params
from mnist_sweep.sweep.loader import load_sweep
from mnist_sweep.sweep.params import suggest_params

QUICK_AXES = ["hidden_layers", "units", "dropout", "optimizer", "batch_size", "epochs", "learning_rate"]


class _Clock:
    """Stands in for time.monotonic: each epoch takes 2 s, the first (it compiles) 10 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr("mnist_sweep.search.progress.time.monotonic", fake)
    return fake


def _epochs(progress: EpochProgress, clock: _Clock, n: int, of: int, number: int = 3) -> None:
    trial = SimpleNamespace(number=number)
    progress.start(trial)
    for epoch in range(n):
        clock.now += 10.0 if epoch == 0 else 2.0
        progress.update(trial, epoch, of, {"val_accuracy": 0.9 + epoch / 100})


def test_a_terminal_gets_one_line_updated_in_place_with_the_time_left(clock: _Clock) -> None:
    out = io.StringIO()
    progress = EpochProgress("terminal", out=out)
    _epochs(progress, clock, 3, of=40)
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3 and "\n" not in text  # rewritten, never a new line
    # the first epoch compiles: the estimate uses the later ones (2 s x 37 epochs left)
    assert text.endswith("trial 3: epoch 3/40 val_acc=0.9200 (2.0s/epoch, ~1m14s left)")
    progress.clear()
    assert out.getvalue().endswith("\r\x1b[K")  # gone before the trial's own line is printed


def test_plain_output_gets_a_line_every_few_seconds_only(clock: _Clock) -> None:
    out = io.StringIO()
    _epochs(EpochProgress("plain", out=out, plain_every=10.0), clock, 12, of=12)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # 10 s, then 2 s per epoch: epochs 1, 6 and 11 are 10 s apart; the last epoch is the trial's own line
    assert [line.split("epoch ")[1].split(" ")[0] for line in lines] == ["1/12", "6/12", "11/12"]


def test_a_short_trial_prints_nothing_extra_in_plain_output(clock: _Clock) -> None:
    out = io.StringIO()
    _epochs(EpochProgress("plain", out=out, plain_every=10.0), clock, 1, of=1)
    assert out.getvalue() == ""


def test_a_notebook_gets_a_progress_bar_per_trial(clock: _Clock) -> None:
    out = io.StringIO()
    progress = EpochProgress("notebook", out=out)
    _epochs(progress, clock, 2, of=5)
    assert progress._bar is not None and progress._bar.n == 2 and progress._bar.total == 5
    progress.clear()
    assert progress._bar is None and "trial 3" in out.getvalue()


def test_auto_mode_follows_the_output() -> None:
    assert EpochProgress(out=io.StringIO()).mode == "plain"  # a pipe or a file: no carriage returns

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert EpochProgress(out=Tty()).mode == "terminal"


@pytest.mark.parametrize(("seconds", "text"), [(42, "42s"), (185, "3m05s"), (3720, "1h02m"), (-3, "0s")])
def test_durations_read_like_a_clock(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def _shown(line: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in line.split(" | ", 1)[1].split())


def test_a_finished_trials_line_shows_the_params_the_sweep_searches_not_its_constants() -> None:
    sweep = load_sweep("quick")  # seven axes searched; the other ten params are the space's constants
    study = optuna.create_study(direction="maximize")
    for value in (0.9226, 0.9178):
        trial = study.ask()
        params = suggest_params(trial, sweep.space)
        study.tell(trial, value)
    out = io.StringIO()
    lines = TrialLines(target=2, out=out)
    for frozen in study.trials:
        lines(study, frozen)
    print_summary(study, 6.0, out)
    text = out.getvalue().splitlines()
    assert len(params) == 17 and {"activation", "deskew", "lr_schedule", "weight_decay"} <= set(params)
    trial_lines, best_line = text[:2], text[-1]
    for line, frozen in zip(trial_lines, study.trials, strict=True):
        assert list(_shown(line)) == QUICK_AXES, line
        assert _shown(line)["optimizer"] == frozen.params["optimizer"]
        assert len(line) < 200, line  # was 300 characters with the constants
    assert best_line.startswith("best trial 0: val_accuracy=0.9226 | ") and list(_shown(best_line)) == QUICK_AXES


def test_short_params_drops_only_params_whose_distribution_holds_one_value() -> None:
    params = {"units": 64, "activation": "relu", "epochs": 4, "dropout": 0.25, "lr": 0.00123456, "extra": 1}
    distributions = {
        "units": CategoricalDistribution([64, 128]), "activation": CategoricalDistribution(["relu"]),
        "epochs": IntDistribution(4, 4), "dropout": FloatDistribution(0.25, 0.25), "lr": FloatDistribution(1e-4, 1e-1),
    }
    assert short_params(params, distributions) == "units=64 lr=0.00123 extra=1"  # no distribution: shown
    assert short_params(params) == "units=64 activation=relu epochs=4 dropout=0.25 lr=0.00123 extra=1"
