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


class _StopSignals:
    """Signal handler: the first SIGINT or SIGTERM stops the command; later ones are ignored so the
    clean-up (failing the running trial) is not cut short, e.g. when a terminal's Ctrl-C also
    reaches a worker through ``run --jobs``, which forwards it.

    The signal is also remembered: an exception raised from a handler can be swallowed where it
    happens to land (a finalizer, a library's ``except BaseException``), so the sweep loop asks
    :meth:`received` between trials too.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        self.signum = signum
        raise self.exception()

    def received(self) -> bool:
        return self.signum is not None

    def unraisable(self, report: Any) -> None:
        """``sys.unraisablehook``: our stop landed in a finalizer (e.g. a weakref callback during a
        garbage collection), where Python can only print it with a traceback. It is remembered
        and acted on at the next epoch or trial, so it needs no traceback; others are printed."""
        if self.signum is not None and isinstance(report.exc_value, KeyboardInterrupt):
            return
        sys.__unraisablehook__(report)

    def exception(self) -> KeyboardInterrupt:
        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's reason is on our progress line
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
    """Run or resume a sweep (``--jobs N``: in N worker processes)."""
    from mnist_sweep.config import load_sweep, resolve_sweep_path, with_overrides

    path = resolve_sweep_path(args.sweep)
    sweep = load_sweep(path)
    sweep = with_overrides(sweep, f"{path} (with command-line overrides)", trials=args.trials,
                           timeout=args.timeout, seed=args.seed, data_source=args.data)
    from mnist_sweep.model import use_backend

    backend = use_backend(sweep.training.backend)
    if getattr(args, "threads", None):
        from mnist_sweep.workers import apply_backend_threads

        apply_backend_threads(args.threads, backend)
    _quiet_libraries()
    from mnist_sweep.data import load_dataset
    from mnist_sweep.study import redact, run_sweep, storage_url

    storage = storage_url(args.storage)
    study_name = args.study or sweep.name
    if getattr(args, "new_study", False):
        study_name = f"{study_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    dataset = load_dataset(sweep.data)
    if getattr(args, "jobs", 1) > 1:
        return _run_jobs(args, path, sweep, storage, study_name, dataset.describe())
    print(f"sweep {path}: study '{study_name}' in {redact(storage)}, target {sweep.trials} trials; "
          f"data {dataset.describe()}", flush=True)
    _freeze_long_lived_objects()
    running: dict[str, Any] = {}
    start = time.monotonic()
    stop = getattr(args, "stop", None)
    try:
        study = run_sweep(sweep, storage, study_name=study_name, dataset=dataset, worker=_worker_index(args),
                          on_trial=_Progress(sweep.trials), on_start=lambda t: running.update(trial=t),
                          should_stop=stop.received if stop else None)
        if stop is not None and stop.received():
            raise stop.exception()
    except KeyboardInterrupt as err:
        _fail_interrupted(running.get("trial"), err)
        print(f"interrupted: resume with: python -m mnist_sweep run {args.sweep or 'default'} "
              f"--study {study_name} --storage {redact(storage)}", file=sys.stderr)
        terminated = isinstance(err, Terminated) or (stop is not None and stop.signum == signal.SIGTERM)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    _print_summary(study, time.monotonic() - start)
    return EXIT_OK


def _freeze_long_lived_objects() -> None:
    """Move what lives for the whole run (modules, the dataset) out of the garbage collector's
    sight: each trial's ``gc.collect`` (Keras's ``clear_session``) then scans only the last
    model's objects. Measured on 16 quick trials: 0.38 -> 0.28 s per trial outside ``fit``."""
    import gc

    import keras  # noqa: F401 - it imports its backend (JAX or TensorFlow): long-lived too

    gc.collect()
    gc.freeze()


def _worker_index(args: argparse.Namespace) -> int:
    """This worker's index, which offsets its sampler seed: ``--worker-id``, else Kubernetes'
    ``$JOB_COMPLETION_INDEX`` (an Indexed Job), else random for ``worker`` (independent machines
    must not share a seed) and 0 for ``run``."""
    if getattr(args, "worker_id", None) is not None:
        return int(args.worker_id)
    if args.handler is not cmd_worker:
        return 0
    index = os.environ.get("JOB_COMPLETION_INDEX", "")
    if index.isdigit():
        return int(index)
    import secrets

    return 1 + secrets.randbelow(1_000_000)


def cmd_worker(args: argparse.Namespace) -> int:
    """Join a sweep's study as one worker (the loop of ``run``, no spawning); any machine can run one."""
    from mnist_sweep.workers import limit_threads, pin_to_cpus

    if args.cpus:  # both before Keras (and its runtime) is imported
        pin_to_cpus(args.cpus)
    threads = args.threads or (len(args.cpus) if args.cpus else None)
    if threads:
        limit_threads(threads)
    return cmd_run(args)


def _run_jobs(args: argparse.Namespace, path: Any, sweep: Any, storage: str, study_name: str, data: str) -> int:
    """Create the study once, then run ``args.jobs`` worker processes on it and wait for them."""
    from mnist_sweep.study import DONE_STATES, open_storage, open_study, redact
    from mnist_sweep.workers import cpu_shares, format_cpu_list, run_workers, thread_share, worker_argv

    study = open_study(sweep, open_storage(storage), study_name)  # enqueues the sweep's trials once
    shares = cpu_shares(args.jobs)
    if shares:  # each worker on its own cores, with as many threads
        plan = [(len(share), share) for share in shares]
        split = f"on cores {' | '.join(format_cpu_list(share) for share in shares)}"
    else:
        plan = [(thread_share(args.jobs), None)] * args.jobs
        split = f"x {plan[0][0]} thread(s), sharing every core"
    print(f"sweep {path}: study '{study_name}' in {redact(storage)}, target {sweep.trials} trials; "
          f"data {data}; {args.jobs} workers {split}", flush=True)
    start = time.monotonic()
    overrides = {"trials": args.trials, "timeout": args.timeout, "seed": args.seed, "data": args.data}
    argvs = [worker_argv(str(path), study_name, threads, {**overrides, "worker_id": i}, cpus=cpus)
             for i, (threads, cpus) in enumerate(plan)]
    result = run_workers(argvs, env={"MNIST_SWEEP_STORAGE": storage})
    resume = (f"python -m mnist_sweep run {args.sweep or 'default'} --study {study_name} "
              f"--storage {redact(storage)} --jobs {args.jobs}")
    if result.signal is not None:
        print(f"interrupted: resume with: {resume}", file=sys.stderr)
        return EXIT_TERMINATED if result.signal == signal.SIGTERM else EXIT_INTERRUPTED
    done = len(study.get_trials(deepcopy=False, states=DONE_STATES))
    bad = [(i, code) for i, code in enumerate(result.codes, start=1) if code != 0]
    for i, code in bad:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        print(f"warning: worker {i} {how}", file=sys.stderr)
    _print_summary(study, time.monotonic() - start)
    if bad and done < sweep.trials:
        print(f"target not reached ({done}/{sweep.trials}): resume with: {resume}", file=sys.stderr)
        return EXIT_INPUT if all(code == EXIT_INPUT for _, code in bad) else 1
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


def cmd_export(args: argparse.Namespace) -> int:
    """Write a study's best trial as a fixed sweep file for ``train``."""
    _quiet_libraries()
    from mnist_sweep.export import export_best
    from mnist_sweep.study import load_existing, storage_url

    url = storage_url(args.storage)
    study = load_existing(url, args.study)
    path = export_best(study, args.output, args.format, storage=url)
    best = study.best_trial
    print(f"wrote {path}: trial {best.number} of study '{study.study_name}' (val_accuracy={best.value:.4f}) "
          f"| {_short_params(best.params)}")
    print(f"next: python -m mnist_sweep train {path}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """Train an exported config on training + validation data, test it once, save model and metrics."""
    _quiet_libraries()
    from mnist_sweep.retrain import train

    def progress(epoch: int, metrics: dict[str, float]) -> bool:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"epoch {epoch + 1}: {shown}", flush=True)
        return False

    print(f"training {args.config} on training + validation data ...", flush=True)
    result = train(args.config, args.output, data=args.data, epochs=args.epochs, seed=args.seed, on_epoch=progress)
    print(f"test accuracy: {result.test_accuracy:.4f} ({100 * result.test_accuracy:.2f}%), "
          f"test loss {result.test_loss:.4f}, {result.seconds:.0f}s training")
    print(f"wrote {result.model_path}, {result.metrics_path.name}, {result.curves_path.name}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify digit images with a trained model; exit 2 if any file could not be read."""
    import json

    from mnist_sweep.model import use_backend

    use_backend("auto")
    from mnist_sweep.predict import load_model, predict_files

    results = predict_files(load_model(args.model), args.images)
    if args.json:
        print(json.dumps(results, indent=2))
    for r in results:
        if "error" in r:
            print(f"error: {r['file']}: {r['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{r['file']}: {r['digit']} (p={r['probability']:.3f})")
    return EXIT_INPUT if any("error" in r for r in results) else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Write a study's self-contained HTML report (plotly figures and a sortable trials table)."""
    _quiet_libraries()
    from mnist_sweep.report import write_report
    from mnist_sweep.study import load_existing, storage_url

    study = load_existing(storage_url(args.storage), args.study)
    path = write_report(study, args.output, args.metrics)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; study '{study.study_name}', "
          f"{len(study.get_trials(deepcopy=False))} trials)")
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on the storage until Ctrl-C."""
    _quiet_libraries()
    from mnist_sweep.dashboard import serve
    from mnist_sweep.study import storage_url

    serve(storage_url(args.storage), host=args.host, port=args.port)
    return EXIT_OK


def cmd_trials(args: argparse.Namespace) -> int:
    """Export one row per trial as CSV (params, timing, size, reasons, per-epoch validation accuracy)."""
    _quiet_libraries()
    from mnist_sweep.study import load_existing, storage_url
    from mnist_sweep.tables import trials_frame

    frame = trials_frame(load_existing(storage_url(args.storage), args.study))
    if args.output:
        frame.to_csv(args.output, index=False)
        print(f"wrote {args.output} ({len(frame)} trials)", file=sys.stderr)
    else:
        try:
            sys.stdout.write(frame.to_csv(index=False))
            sys.stdout.flush()
        except BrokenPipeError:  # `trials | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Parser


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL",
                   help="Optuna RDB URL (default: $MNIST_SWEEP_STORAGE or sqlite:///studies/mnist_sweep.db)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a whole number >= 1, got {value}")
    return value


def _cpu_list(text: str) -> list[int]:
    from mnist_sweep.workers import parse_cpu_list

    try:
        return parse_cpu_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    """The arguments ``run`` and ``worker`` share: the sweep, its study and storage, and overrides."""
    p.add_argument("sweep", nargs="?", metavar="SWEEP",
                   help="sweep file, or a name in sweeps/ (default: sweeps/default.yaml)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the sweep's name)")
    _add_storage(p)
    p.add_argument("--trials", type=int, metavar="N", help="target number of finished trials")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    p.add_argument("--data", metavar="PATH", help="IDX directory, .npz, 'bundled' or 'keras'")
    p.add_argument("--seed", type=int, metavar="N", help="sampler and weight-init seed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-sweep",
        description="Hyperparameter sweeps of Keras MLPs on MNIST with Optuna.",
        epilog="Start with: python -m mnist_sweep run quick   (then: report, dashboard, export, train, predict)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run or resume a sweep", description=(
        "Run a sweep until its study holds `trials` COMPLETE + PRUNED trials; running it again resumes."))
    _add_sweep_args(run)
    run.add_argument("--new-study", action="store_true",
                     help="start a new study (name gets a timestamp) instead of resuming")
    run.add_argument("-j", "--jobs", type=_positive_int, default=1, metavar="N",
                     help="run N worker processes on this machine, each with its share of the cores (default 1)")
    run.set_defaults(handler=cmd_run)

    worker = sub.add_parser("worker", help="join a sweep's study as one worker (from any machine)", description=(
        "One worker of a shared study: the loop of `run`, without spawning. Start one per machine (or per "
        "container) with the same --storage (a PostgreSQL URL, or $MNIST_SWEEP_STORAGE) and --study."))
    _add_sweep_args(worker)
    worker.add_argument("--threads", type=_positive_int, metavar="K",
                        help="limit this worker's compute threads to K (default: its cores)")
    worker.add_argument("--cpus", type=_cpu_list, metavar="LIST",
                        help="run this worker on these cores only, e.g. 0-3 or 0,2 (Linux; "
                             "`run --jobs N` gives each worker its own share)")
    worker.add_argument("--worker-id", type=int, metavar="I",
                        help="offsets the sampler seed so workers propose different configs (default: "
                             "$JOB_COMPLETION_INDEX of a Kubernetes Indexed Job, else random)")
    worker.set_defaults(handler=cmd_worker)

    studies = sub.add_parser("studies", help="list the studies in a storage")
    _add_storage(studies)
    studies.set_defaults(handler=cmd_studies)

    export = sub.add_parser("export", help="write a study's best trial as a fixed config for train", description=(
        "Write the best COMPLETE trial as a sweep file with every axis fixed, the study's data settings and "
        "its provenance; `train` takes it as is (default: studies/<study>/best.yaml)."))
    export.add_argument("--study", metavar="NAME", help="study name (default: the storage's only study)")
    _add_storage(export)
    export.add_argument("-o", "--output", metavar="FILE", help="default: studies/<study>/best.yaml")
    export.add_argument("--format", choices=["yaml", "json"], help="default: json for a .json FILE, else yaml")
    export.set_defaults(handler=cmd_export)

    train = sub.add_parser("train", help="train an exported config on all training data and test it once",
                           description=(
        "Train the config's model on the training and validation images together, evaluate it once on the "
        "test set, and save model.keras, metrics.json and curves.html (default: in studies/<study>/)."))
    train.add_argument("config", metavar="CONFIG", help="an exported config (every axis fixed)")
    train.add_argument("-o", "--output", metavar="MODEL",
                       help="model file, .keras (default: studies/<study>/model.keras)")
    train.add_argument("--data", metavar="PATH", help="IDX directory, .npz, 'bundled' or 'keras'")
    train.add_argument("--epochs", type=_positive_int, metavar="N", help="override the config's epochs")
    train.add_argument("--seed", type=int, metavar="N", help="weight-init seed (default: the config's seed)")
    train.set_defaults(handler=cmd_train)

    predict = sub.add_parser("predict", help="classify digit images with a trained model", description=(
        "Classify image files (PNG, JPEG, ...; any size, either polarity) with a model.keras from `train`. "
        "Exit code 2 if any file could not be read; the others are still classified."))
    predict.add_argument("model", metavar="MODEL", help="a .keras model saved by train")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument("--json", action="store_true", help="print the results as JSON (with all 10 probabilities)")
    predict.set_defaults(handler=cmd_predict)

    study_help = "study name (default: the storage's only study)"
    report = sub.add_parser("report", help="write a study's HTML report (offline, self-contained)", description=(
        "One HTML file with plotly.js embedded: accuracy against each searched axis, parallel coordinates, "
        "optimisation history, importances, learning curves, cost, and a sortable trials table."))
    report.add_argument("--study", metavar="NAME", help=study_help)
    _add_storage(report)
    report.add_argument("-o", "--output", metavar="PATH", help="HTML file (default: studies/<study>/report.html)")
    report.add_argument("--metrics", metavar="PATH",
                        help="test metrics JSON of the retrained model (default: studies/<study>/metrics.json "
                             "if it exists)")
    report.set_defaults(handler=cmd_report)

    dashboard = sub.add_parser("dashboard", help="browse the storage's studies in optuna-dashboard", description=(
        "Serve optuna-dashboard on the storage until Ctrl-C. It has no authentication and can delete studies: "
        "keep it on loopback (the default) or behind something that authenticates."))
    _add_storage(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    dashboard.set_defaults(handler=cmd_dashboard)

    trials = sub.add_parser("trials", help="export a study's trials as CSV", description=(
        "One row per trial: state, value, params_*, times, n_params, seconds_per_epoch, epochs_run, fail_reason, "
        "val_accuracy_e1..eN and the per-epoch history as JSON."))
    trials.add_argument("--study", metavar="NAME", help=study_help)
    _add_storage(trials)
    trials.add_argument("-o", "--output", metavar="PATH", help="CSV file (default: standard output)")
    trials.set_defaults(handler=cmd_trials)

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
    stop = args.stop = _StopSignals()
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, stop)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT stays ignored
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, stop)
    previous_unraisable, sys.unraisablehook = sys.unraisablehook, stop.unraisable
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
        sys.unraisablehook = previous_unraisable
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def entry() -> None:
    """``python -m mnist_sweep`` and the ``mnist-sweep`` script: :func:`main`, then exit with its code.

    After a stop signal the storage is already consistent (the running trial was failed), but the
    signal can land inside XLA's C++ while it dispatches, and its runtime then crashes in the
    interpreter's teardown (exit 139 instead of 130, seen in 2 runs of 5): skip the teardown.
    """
    code = main()
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
