"""The command line's arguments: one parser, its subcommands and their options.

:func:`build_parser` is all of it; :mod:`mnist_sweep.cli.main` runs the command it parses.

Example:
    >>> build_parser().parse_args(["run", "quick", "--jobs", "2"]).jobs
    2
"""

from __future__ import annotations

import argparse

import mnist_sweep as ms

#: bench.PARTS, not imported; a test keeps them equal
BENCH_PARTS = ("throughput", "parallel", "pruning", "anytime", "packed")


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL",
                   help="Optuna RDB URL (default: $MNIST_SWEEP_STORAGE or sqlite:///studies/mnist_sweep.db)")


def _add_stored_study(p: argparse.ArgumentParser) -> None:
    """``--study`` and ``--storage`` of the commands that read a stored study."""
    p.add_argument("--study", metavar="NAME", help="study name (default: the storage's only study)")
    _add_storage(p)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a whole number >= 1, got {value}")
    return value


def _members(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"want a number > 0, got {text}")
    return value


def _cpu_list(text: str) -> list[int]:
    try:
        return ms.parse_cpu_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _gpu_list(text: str) -> list[str]:
    """GPUs as ``CUDA_VISIBLE_DEVICES`` names them: indices or UUIDs, comma-separated (``0,1``)."""
    gpus = [part.strip() for part in text.split(",")]
    if not all(gpus) or not all(part.replace("-", "").replace(":", "").isalnum() for part in gpus):
        raise argparse.ArgumentTypeError(f"not a GPU list like 0,1: {text!r}")
    return list(dict.fromkeys(gpus))


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    """The arguments ``run`` and ``worker`` share: the sweep, its study and storage, and overrides."""
    p.add_argument("sweep", nargs="?", metavar="SWEEP",
                   help="sweep file, or a name: ./sweeps/NAME.yaml, else a shipped sweep (quick, tutorial, default, "
                        "best; default is the default)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the sweep's name)")
    _add_storage(p)
    p.add_argument("--trials", type=int, metavar="N", help="target number of finished trials")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    p.add_argument("--data", metavar="PATH", help="IDX directory, .npz, 'bundled' or 'keras'")
    p.add_argument("--seed", type=int, metavar="N", help="sampler and weight-init seed")
    p.add_argument("--pack", type=_members, metavar="K",
                   help="train up to K trials of one model structure together as one program (the sweep's "
                        "pack.members; 1: one trial at a time; auto: 8 on a GPU, 1 on a CPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-sweep",
        description="Hyperparameter sweeps of Keras MLPs on MNIST with Optuna.",
        epilog="Start with: python -m mnist_sweep run quick   (then: report, dashboard, export, train, predict)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(command=None)

    run = sub.add_parser("run", help="run or resume a sweep", description=(
        "Run a sweep until its study holds `trials` COMPLETE + PRUNED trials; running it again resumes."))
    _add_sweep_args(run)
    run.add_argument("--new-study", action="store_true",
                     help="start a new study (name gets a timestamp) instead of resuming")
    run.add_argument("-j", "--jobs", type=_positive_int, default=1, metavar="N",
                     help="run N worker processes on this machine, each with its share of the cores (default 1); "
                          "where JAX sees GPUs, spread over them instead")
    run.add_argument("--gpus", type=_gpu_list, metavar="LIST",
                     help="the GPUs --jobs spreads its workers over, as CUDA_VISIBLE_DEVICES names them, e.g. 0,1 "
                          "(default: every GPU JAX sees)")
    run.set_defaults(command="run", threads=None, cpus=None, worker_id=None)

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
    worker.set_defaults(command="worker", jobs=1, new_study=False, gpus=None)

    studies = sub.add_parser("studies", help="list the studies in a storage")
    _add_storage(studies)
    studies.set_defaults(command="studies")

    export = sub.add_parser("export", help="write a study's best trial as a fixed config for train", description=(
        "Write the best COMPLETE trial as a sweep file with every axis fixed, the study's data settings and "
        "its provenance; `train` takes it as is (default: studies/<study>/best.yaml)."))
    _add_stored_study(export)
    export.add_argument("-o", "--output", metavar="FILE", help="default: studies/<study>/best.yaml")
    export.add_argument("--format", choices=["yaml", "json"], help="default: json for a .json FILE, else yaml")
    export.set_defaults(command="export")

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
    train.add_argument("--onnx", action="store_true",
                       help="also write model.onnx, checked against Keras on the test images (pip install "
                            "'mnist-sweep[onnx]')")
    train.set_defaults(command="train")

    final = sub.add_parser("final", help="the final model from the study's kept models, tested once", description=(
        "Choose among the study's best kept model and the averages of its best 2..K kept models on the "
        "validation split, evaluate the choice once on the test set, and save model.keras and metrics.json "
        "(default: studies/<study>/final/)."))
    _add_stored_study(final)
    final.add_argument("-o", "--output", metavar="DIR", help="default: studies/<study>/final")
    final.add_argument("-k", type=_positive_int, metavar="K", help="largest ensemble tried (default: every kept model)")
    final.add_argument("--max-params", type=_positive_int, metavar="N",
                       help="the best model of at most N parameters (an ensemble: all its members')")
    final.add_argument("--max-latency-ms", type=_positive_float, metavar="MS",
                       help="the best model whose latency for one image, as its trials measured it, is at most MS")
    final.add_argument("--onnx", action="store_true",
                       help="also write model.onnx, checked against Keras on the test images (pip install "
                            "'mnist-sweep[onnx]')")
    final.set_defaults(command="final")

    predict = sub.add_parser("predict", help="classify digit images with a trained model", description=(
        "Classify image files (PNG, JPEG, ...; any size, either polarity) with a model.keras from `train`. "
        "Exit code 2 if any file could not be read; the others are still classified."))
    predict.add_argument("model", metavar="MODEL", help="a .keras model saved by train")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument("--json", action="store_true", help="print the results as JSON (with all 10 probabilities)")
    predict.set_defaults(command="predict")

    report = sub.add_parser("report", help="write a study's HTML report (offline, self-contained)", description=(
        "One HTML file with plotly.js embedded: accuracy against each searched axis, parallel coordinates, "
        "optimisation history, importances, learning curves, cost, and a sortable trials table."))
    _add_stored_study(report)
    report.add_argument("-o", "--output", metavar="PATH", help="HTML file (default: studies/<study>/report.html)")
    report.add_argument("--metrics", metavar="PATH",
                        help="test metrics JSON of the retrained model (default: studies/<study>/metrics.json "
                             "if it exists)")
    report.set_defaults(command="report")

    dashboard = sub.add_parser("dashboard", help="browse the storage's studies in optuna-dashboard", description=(
        "Serve optuna-dashboard on the storage until Ctrl-C. It has no authentication and can delete studies: "
        "keep it on loopback (the default) or behind something that authenticates."))
    _add_storage(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    dashboard.set_defaults(command="dashboard")

    serve = sub.add_parser("serve", help="a web page to draw or upload an image and see the model's answer",
                           description=("Serve a page with a drawing canvas and an upload button for MODEL, and "
                                        "POST /predict (an image as the body, or a multipart field 'image') answering "
                                        "JSON like predict --json. No authentication: keep it on loopback."))
    serve.add_argument("model", metavar="MODEL", help="a .keras model (from train or final)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.set_defaults(command="serve")

    trials = sub.add_parser("trials", help="export a study's trials as CSV", description=(
        "One row per trial: state, value, params_*, times, n_params, seconds_per_epoch, latency_ms_batch1, "
        "images_per_s_batch1024, epochs_run, fail_reason, val_accuracy_e1..eN and the per-epoch history as JSON."))
    _add_stored_study(trials)
    trials.add_argument("-o", "--output", metavar="PATH", help="CSV file (default: standard output)")
    trials.set_defaults(command="trials")

    bench = sub.add_parser("bench", help="measure speed and search efficiency on this machine", description=(
        "Epoch throughput vs the tutorial's code path and the FLOP bound, pruning efficiency, 1 vs 2 workers, "
        "per-trial overhead and the default sweep's anytime quality; prints figures next to their targets."))
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    bench.add_argument("--full", action="store_true",
                       help="pruning efficiency on the full data at 0.980 (default: --fast, a subset at 0.965)")
    bench.add_argument("--only", nargs="+", choices=BENCH_PARTS,
                       help="run only these parts")
    bench.add_argument("--members", type=_positive_int, metavar="K",
                       help="members per pack in the packed part (default: 64 on an accelerator, 8 on a CPU)")
    bench.add_argument("--anytime-seconds", type=float, default=900.0, metavar="S",
                       help="how long the default sweep runs for the anytime figures (default 900)")
    bench.add_argument("-o", "--output", metavar="FILE", help="also write the JSON to FILE")
    bench.set_defaults(command="bench")

    schema = sub.add_parser("schema", help="print the JSON Schema of sweep files")
    schema.add_argument("-o", "--output", metavar="FILE", help="write to FILE (e.g. sweeps/sweep.schema.json)")
    schema.set_defaults(command="schema")
    return parser
