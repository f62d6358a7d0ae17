"""``python -m mnist_sweep``: a thin command line over the library.

Each subcommand parses its arguments and calls one library function. Exit codes: 0 done,
2 bad input (usage, sweep file, data, storage), 130 interrupted (143 on SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from mnist_sweep.errors import InputError

EXIT_OK, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so Optuna marks the running trial FAIL instead of leaving it RUNNING."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _short_params(params: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


class _Progress:
    """One line per finished trial, with a progress bar towards the target."""

    def __init__(self, target: int, prefix: str = "") -> None:
        self.target = target
        self.prefix = prefix

    def __call__(self, study: Any, trial: Any) -> None:
        from mnist_sweep.study import DONE_STATES

        done = len(study.get_trials(deepcopy=False, states=DONE_STATES))
        filled = min(20, round(20 * done / self.target))
        bar = "#" * filled + "-" * (20 - filled)
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        value = f"val_acc={trial.value:.4f}" if trial.value is not None else ""
        if trial.state.name == "PRUNED":
            last = trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None
            value = trial.user_attrs.get("fail_reason") or (f"at epoch {max(trial.intermediate_values)} "
                                                            f"val_acc={last:.4f}" if last is not None else "")
        elif trial.state.name == "FAIL":
            value = trial.user_attrs.get("fail_reason", "")
        try:
            best = f" best={study.best_value:.4f}"
        except ValueError:
            best = ""
        print(f"{self.prefix}[{bar}] {done}/{self.target} trial {trial.number} {trial.state.name} {value} "
              f"({seconds:.1f}s){best} | {_short_params(trial.params)}", flush=True)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_run(args: argparse.Namespace) -> int:
    """Run or resume a sweep."""
    from mnist_sweep.config import load_sweep, resolve_sweep_path, with_overrides

    path = resolve_sweep_path(args.sweep)
    sweep = load_sweep(path)
    sweep = with_overrides(sweep, f"{path} (with command-line overrides)", trials=args.trials,
                           timeout=args.timeout, seed=args.seed, data_source=args.data)
    from mnist_sweep.model import use_backend

    use_backend(sweep.training.backend)
    _quiet_libraries()
    from mnist_sweep.data import load_dataset
    from mnist_sweep.study import redact, run_sweep, storage_url

    storage = storage_url(args.storage)
    study_name = args.study or sweep.name
    if args.new_study:
        study_name = f"{study_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    dataset = load_dataset(sweep.data)
    print(f"sweep {path}: study '{study_name}' in {redact(storage)}, target {sweep.trials} trials; "
          f"data {dataset.describe()}", flush=True)
    running: dict[str, Any] = {}
    start = time.monotonic()
    try:
        study = run_sweep(sweep, storage, study_name=study_name, dataset=dataset,
                          on_trial=_Progress(sweep.trials), on_start=lambda t: running.update(trial=t))
    except KeyboardInterrupt as err:
        _fail_interrupted(running.get("trial"), err)
        print(f"interrupted: resume with: python -m mnist_sweep run {args.sweep or 'default'} "
              f"--study {study_name} --storage {redact(storage)}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    _print_summary(study, time.monotonic() - start)
    return EXIT_OK


def _fail_interrupted(trial: Any, err: BaseException) -> None:
    """Optuna fails the trial it was running on Ctrl-C; make sure, even if the signal came mid-I/O."""
    if trial is None:
        return
    from optuna.trial import TrialState

    storage = trial.study._storage
    try:
        if storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"interrupted ({type(err).__name__})")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except Exception as cleanup_err:  # noqa: BLE001 - best effort on the way out
        print(f"warning: could not mark trial {trial.number} failed: {cleanup_err}", file=sys.stderr)


def _print_summary(study: Any, seconds: float) -> None:
    from mnist_sweep.study import count_states

    counts = count_states(study)
    states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items()))
    print(f"study '{study.study_name}': {states} ({seconds:.0f}s this run)")
    try:
        best = study.best_trial
    except ValueError:
        print("no completed trial yet")
        return
    print(f"best trial {best.number}: val_accuracy={best.value:.4f} | {_short_params(best.params)}")


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure epoch speed, pruning efficiency, parallel scaling, overhead and anytime quality."""
    import json

    from mnist_sweep.bench import format_table, run_bench

    results = run_bench(fast=not args.full, parts=args.only or ("throughput", "parallel", "pruning", "anytime"),
                        anytime_seconds=args.anytime_seconds)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    print(json.dumps(results) if args.json else format_table(results))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """Print or write the JSON Schema of sweep files."""
    import json

    from mnist_sweep.config import sweep_json_schema

    text = json.dumps(sweep_json_schema(), indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_studies(args: argparse.Namespace) -> int:
    """List the studies in a storage with their trial counts and best values."""
    _quiet_libraries()
    import optuna

    from mnist_sweep.study import open_storage, redact, storage_url

    url = storage_url(args.storage)
    storage = open_storage(url, create=False)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if not summaries:
        print(f"no studies in {redact(url)}")
        return EXIT_OK
    for s in summaries:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        counts = ", ".join(f"{n} {k.lower()}" for k, n in sorted(_counts(study).items()))
        best = f"best {s.best_trial.value:.4f} (trial {s.best_trial.number})" if s.best_trial else "no best yet"
        print(f"{s.study_name}: {counts or 'no trials'}; {best}")
    return EXIT_OK


def _counts(study: Any) -> dict[str, int]:
    from mnist_sweep.study import count_states

    return dict(count_states(study))


# ---------------------------------------------------------------------------------------------
# Parser


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL",
                   help="Optuna RDB URL (default: $MNIST_SWEEP_STORAGE or sqlite:///studies/mnist_sweep.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-sweep",
        description="Hyperparameter sweeps of Keras MLPs on MNIST with Optuna.",
        epilog="Start with: python -m mnist_sweep run quick   (then: report, dashboard, export, train, predict)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run or resume a sweep", description=(
        "Run a sweep until its study holds `trials` COMPLETE + PRUNED trials; running it again resumes."))
    run.add_argument("sweep", nargs="?", metavar="SWEEP",
                     help="sweep file, or a name in sweeps/ (default: sweeps/default.yaml)")
    run.add_argument("--study", metavar="NAME", help="study name (default: the sweep's name)")
    _add_storage(run)
    run.add_argument("--trials", type=int, metavar="N", help="target number of finished trials")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    run.add_argument("--data", metavar="PATH", help="IDX directory, .npz, 'bundled' or 'keras'")
    run.add_argument("--seed", type=int, metavar="N", help="sampler and weight-init seed")
    run.add_argument("--new-study", action="store_true",
                     help="start a new study (name gets a timestamp) instead of resuming")
    run.set_defaults(handler=cmd_run)

    studies = sub.add_parser("studies", help="list the studies in a storage")
    _add_storage(studies)
    studies.set_defaults(handler=cmd_studies)

    bench = sub.add_parser("bench", help="measure speed and search efficiency on this machine", description=(
        "Epoch throughput vs the tutorial's code path and the FLOP bound, pruning efficiency, 1 vs 2 workers, "
        "per-trial overhead and the default sweep's anytime quality; prints figures next to their targets."))
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    bench.add_argument("--full", action="store_true",
                       help="pruning efficiency on the full data at 0.980 (default: --fast, a subset at 0.965)")
    bench.add_argument("--only", nargs="+", choices=["throughput", "parallel", "pruning", "anytime"],
                       help="run only these parts")
    bench.add_argument("--anytime-seconds", type=float, default=900.0, metavar="S",
                       help="how long the default sweep runs for the anytime figures (default 900)")
    bench.add_argument("-o", "--output", metavar="FILE", help="also write the JSON to FILE")
    bench.set_defaults(handler=cmd_bench)

    schema = sub.add_parser("schema", help="print the JSON Schema of sweep files")
    schema.add_argument("-o", "--output", metavar="FILE", help="write to FILE (e.g. sweeps/sweep.schema.json)")
    schema.set_defaults(handler=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it in-process)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_INPUT
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.handler(args)
    except InputError as err:
        for line in err.problems:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt as err:
        print("interrupted", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
