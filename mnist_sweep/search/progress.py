"""What a run shows while it runs: one line per finished trial, and each trial's epochs as they pass.

- :class:`TrialLines` prints one line per finished trial (state, validation accuracy, seconds,
  the params the sweep searches, a bar towards the target): the line logs keep and ``run --jobs``
  relays. The space's constants (a ``value``, one choice) are left out: they are the same on
  every line, and the sweep file states them.
- :class:`EpochProgress` shows the running trial's epochs with an estimate of its remaining
  time: in a terminal one line updated in place; in a notebook a ``tqdm`` bar; otherwise (a log
  file, a pipe, a ``--jobs`` worker) a plain line at most every ``plain_every`` seconds, so short
  trials add nothing and a long one still shows it is alive.

Example:
    >>> lines, epochs = TrialLines(target=20), EpochProgress()
    >>> run_sweep(sweep, url, options=LoopOptions(on_trial=lines, on_start=epochs.start, on_epoch=epochs.update))
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, TextIO

from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from tqdm import tqdm

from mnist_sweep.sweep.goals import accuracy_of, best_trial


def short_params(params: Mapping[str, Any], distributions: Mapping[str, BaseDistribution] | None = None) -> str:
    """``k=v`` pairs, floats to 3 significant digits; given the trial's ``distributions``, only the
    params the sweep searches (a param whose distribution holds one value is a constant of the space).

    Example:
        >>> short_params(trial.params, trial.distributions)   # run quick: 7 of the 17 params
        'hidden_layers=2 units=128 dropout=0.3 optimizer=adam batch_size=128 epochs=4 learning_rate=0.001'
    """
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    def searched(name: str) -> bool:
        dist = (distributions or {}).get(name)
        return distributions is None or dist is None or not dist.single()

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items() if searched(k))


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a terminal's carriage returns do not apply)."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return bool(get and get() is not None and "IPKernelApp" in getattr(get(), "config", {}))


class TrialLines:
    """One line per finished trial, with a progress bar towards ``target`` (an Optuna callback)."""

    def __init__(self, target: int, prefix: str = "", out: TextIO | None = None,
                 before: Any = None) -> None:
        self.target = target
        self.prefix = prefix
        self.out = out
        self.before = before  # called first, e.g. to clear a live epoch line

    def __call__(self, study: Any, trial: Any) -> None:
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        done = len(finished)
        filled = min(20, round(20 * done / self.target))
        bar = "#" * filled + "-" * (20 - filled)
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        value = f"val_acc={accuracy_of(trial):.4f}" if trial.values else ""
        if trial.state == TrialState.PRUNED:
            steps = trial.intermediate_values
            last = steps[max(steps)] if steps else None
            value = trial.user_attrs.get("fail_reason") or (
                f"at epoch {max(steps)} val_acc={last:.4f}" if last is not None else "")
        elif trial.state == TrialState.FAIL:
            value = trial.user_attrs.get("fail_reason", "")
        leader = best_trial(study, finished)
        best = f" best={accuracy_of(leader):.4f}" if leader is not None else ""
        if self.before is not None:
            self.before()
        print(f"{self.prefix}[{bar}] {done}/{self.target} trial {trial.number} {trial.state.name} {value} "
              f"({seconds:.1f}s){best} | {short_params(trial.params, trial.distributions)}",
              file=self.out or sys.stdout, flush=True)


class EpochProgress:
    """Live progress of the running trial's epochs (see the module docstring for the three modes).

    Args:
        mode: ``auto`` (terminal, notebook or plain, from where the output goes), or one of
            ``terminal``, ``notebook``, ``plain``, ``off`` (shows nothing).
        plain_every: seconds between two plain lines of one trial.
    """

    def __init__(self, mode: str = "auto", out: TextIO | None = None, plain_every: float = 10.0) -> None:
        self.out = out or sys.stdout
        if mode == "auto":
            isatty = getattr(self.out, "isatty", lambda: False)()
            mode = "notebook" if in_notebook() else "terminal" if isatty else "plain"
        self.mode = mode
        self.plain_every = plain_every
        self._trial: int | None = None
        self._seconds: list[float] = []
        self._last_time = 0.0
        self._last_plain = 0.0
        self._bar: Any = None
        self._shown = False

    def start(self, trial: Any) -> None:
        """A trial starts: its epochs are timed from now."""
        self.clear()
        self._trial, self._seconds = trial.number, []
        self._last_time = self._last_plain = time.monotonic()

    def update(self, trial: Any, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        """After epoch ``epoch`` (0-based) of ``epochs`` of ``trial``: show where it stands."""
        if self.mode == "off":
            return
        now = time.monotonic()
        if trial.number != self._trial:
            self.start(trial)
        self._seconds.append(now - self._last_time)
        self._last_time = now
        done = epoch + 1
        typical = statistics.median(self._seconds[1:] or self._seconds)  # the first epoch compiles
        left = format_duration(typical * (epochs - done))
        text = (f"  trial {trial.number}: epoch {done}/{epochs} val_acc={metrics.get('val_accuracy', float('nan')):.4f}"
                f" ({typical:.1f}s/epoch, ~{left} left)")
        if self.mode == "terminal":
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
            self._shown = True
        elif self.mode == "notebook":
            self._notebook_bar(trial.number, epochs).update(1)
            self._bar.set_postfix_str(f"val_acc={metrics.get('val_accuracy', float('nan')):.4f}", refresh=True)
        elif self.mode == "plain" and now - self._last_plain >= self.plain_every and done < epochs:
            print(text, file=self.out, flush=True)
            self._last_plain = now

    def clear(self) -> None:
        """Remove the live line (before a trial's summary line is printed) or close the bar."""
        if self._shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._shown = False
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _notebook_bar(self, number: int, epochs: int) -> Any:
        if self._bar is None:
            bar = tqdm
            if importlib.util.find_spec("ipywidgets") is not None:
                from tqdm.auto import tqdm as bar  # loads IPython and its widgets: only here, in a notebook
            self._bar = bar(total=epochs, desc=f"trial {number}", unit="epoch", leave=False, file=self.out)
        return self._bar


def print_summary(study: Any, seconds: float, out: TextIO | None = None) -> None:
    """The run's last lines: trials per state, this run's seconds, the best trial (its searched params)."""
    out = out or sys.stdout
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items()))
    print(f"study '{study.study_name}': {states} ({seconds:.0f}s this run)", file=out)
    best = best_trial(study)
    if best is None:
        print("no completed trial yet", file=out)
        return
    print(f"best trial {best.number}: val_accuracy={accuracy_of(best):.4f} | "
          f"{short_params(best.params, best.distributions)}", file=out)
