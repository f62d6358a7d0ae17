"""``python -m mnist_sweep``: a thin command line over the library's public API (:mod:`mnist_sweep`).

Each command parses its arguments, calls names :mod:`mnist_sweep` exports and prints; nothing here
imports the package's modules. Exit codes are the errors' own (:mod:`mnist_sweep.errors`): 0 done,
1 the run failed (its trials kept crashing, or a worker did), 2 bad input (usage, sweep file,
data), 75 the storage is unavailable, 130 interrupted (143 on SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import mnist_sweep as ms
from mnist_sweep.cli.args import BENCH_PARTS, build_parser

if TYPE_CHECKING:
    import optuna


def cmd_run(args: argparse.Namespace) -> int:
    """Run or resume a sweep (``--jobs N``: in N worker processes)."""
    sweep = ms.with_overrides(ms.load_sweep(args.sweep), trials=args.trials, timeout=args.timeout, seed=args.seed,
                              data=args.data, pack=args.pack, origin="command line")
    worker = args.worker_id
    if args.command == "worker" and worker is None:
        worker = ms.default_worker_id()
    try:
        ms.run(sweep, args.storage, args.study, jobs=args.jobs, new_study=args.new_study, worker_id=worker or 0,
               threads=args.threads, cpus=args.cpus, gpus=args.gpus)
    except ms.SweepInterrupted as err:
        study = getattr(err.study, "study_name", None) or args.study or sweep.name
        jobs = f" --jobs {args.jobs}" if args.jobs > 1 else ""
        storage = f" --storage {ms.redact(args.storage)}" if args.storage else ""
        print(f"interrupted: resume with: python -m mnist_sweep run {args.sweep or 'default'} --study {study}"
              f"{storage}{jobs}", file=sys.stderr)
        return err.exit_code
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Join a sweep's study as one worker (the loop of ``run``, no spawning); any machine can run one."""
    return cmd_run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure epoch speed, pruning efficiency, parallel scaling, overhead and anytime quality."""
    results = ms.run_bench(fast=not args.full, parts=args.only or BENCH_PARTS, anytime_seconds=args.anytime_seconds,
                           members=args.members)
    if args.output:
        ms.write_text_atomic(Path(args.output), json.dumps(results, indent=2))
    print(json.dumps(results) if args.json else ms.format_bench(results))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print or write the JSON Schema of sweep files."""
    text = json.dumps(ms.sweep_json_schema(), indent=2) + "\n"
    if args.output:
        ms.write_text_atomic(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    """List the studies in a storage with their trial counts and best values."""
    ms.quiet_libraries()
    summaries = ms.study_summaries(args.storage)
    if not summaries:
        print(f"no studies in {ms.redact(ms.storage_url(args.storage))}")
    for s in summaries:
        states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(s.states.items())) or "no trials"
        best = f"best {s.best_accuracy:.4f} (trial {s.best_trial})" if s.best_trial is not None else "no best yet"
        if len(s.directions) > 1:
            best += f"; objectives {', '.join(s.directions)}"
        print(f"{s.study_name}: {states}; {best}")
    return 0


def _load_study(args: argparse.Namespace) -> optuna.Study:
    ms.quiet_libraries()
    return ms.load_study(args.storage, args.study)


def cmd_export(args: argparse.Namespace) -> int:
    """Write a study's best trial as a fixed sweep file for ``train``."""
    study = _load_study(args)
    path = ms.export_best(study, args.output, args.format, storage=ms.storage_url(args.storage))
    best = ms.chosen_trial(study)
    print(f"wrote {path}: trial {best.number} of study '{study.study_name}' (val_accuracy={best.values[0]:.4f}) "
          f"| {ms.short_params(best.params, best.distributions)}")
    print(f"next: python -m mnist_sweep train {path}")
    return 0


def _print_epoch(epoch: int, metrics: dict[str, float]) -> bool:
    """``train``'s progress: one line per epoch; never stops the training."""
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    print(f"epoch {epoch + 1}: {shown}", flush=True)
    return False


def cmd_train(args: argparse.Namespace) -> int:
    """Train an exported config on training + validation data, test it once, save model and metrics."""
    print(f"training {args.config} on training + validation data ...", flush=True)
    output = Path(args.output) if args.output else None
    final = ms.train_final(args.config, output_dir=output.parent if output else None, data=args.data,
                           epochs=args.epochs, seed=args.seed, on_epoch=_print_epoch,
                           model_name=output.name if output else "model.keras", onnx=args.onnx)
    print(f"test accuracy: {final.test_accuracy:.4f} ({100 * final.test_accuracy:.2f}%), "
          f"test loss {final.test_loss:.4f}, {final.seconds:.0f}s training")
    print(f"wrote {final.model_path}, {final.metrics_path.name}, MODEL_CARD.md" + (
        f", {final.curves_path.name}" if final.curves_path else "") + _onnx_line(final.metrics))
    return 0


def cmd_final(args: argparse.Namespace) -> int:
    """Build the final model from the study's kept models (chosen on validation), test it once, save it."""
    final = ms.build_final(_load_study(args), args.output, args.k, max_params=args.max_params,
                           max_latency_ms=args.max_latency_ms, onnx=args.onnx)
    what = f"trial {final.members[0]}" if len(final.members) == 1 else \
        f"the average of trials {', '.join(map(str, final.members))}"
    print(f"chose {what} (validation accuracy {final.metrics['validation_accuracy']:.4f})")
    print(f"test accuracy: {final.test_accuracy:.4f} ({100 * final.test_accuracy:.2f}%); best single member "
          f"{final.metrics['best_member_test_accuracy']:.4f}")
    print(f"{final.metrics['n_params']:,} parameters, {final.metrics['latency_ms_batch1']:.3f} ms per image at batch 1")
    print(f"wrote {final.model_path}, {final.metrics_path.name}, MODEL_CARD.md" + _onnx_line(final.metrics))
    return 0


def _onnx_line(metrics: dict) -> str:
    if metrics.get("onnx_agreement") is None:
        return ""
    return f", {metrics['onnx_file']} (answers as Keras's on {100 * metrics['onnx_agreement']:.2f}% of the test images)"


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify images with a trained model; exit 2 (bad input) if any file could not be read."""
    ms.prepare_process("auto")
    results = ms.predict_files(args.model, args.images)
    if args.json:
        print(json.dumps(results, indent=2))
    for r in results:
        if "error" in r:
            print(f"error: {r['file']}: {r['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{r['file']}: {r['label']} (p={r['probability']:.3f})")
    return ms.InputError.exit_code if any("error" in r for r in results) else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a study's self-contained HTML report (plotly figures and a sortable trials table)."""
    study = _load_study(args)
    path = ms.write_report(study, args.output, args.metrics)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; study '{study.study_name}', "
          f"{len(study.get_trials(deepcopy=False))} trials)")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on the storage until Ctrl-C."""
    ms.quiet_libraries()
    ms.serve_dashboard(ms.storage_url(args.storage), host=args.host, port=args.port)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the model's web page and /predict until Ctrl-C."""
    ms.quiet_libraries()
    ms.serve_model(args.model, host=args.host, port=args.port)
    return 0


def cmd_trials(args: argparse.Namespace) -> int:
    """Export one row per trial as CSV (params, timing, size, reasons, per-epoch validation accuracy)."""
    frame = ms.trials_frame(_load_study(args))
    if args.output:
        ms.write_trials_csv(frame, args.output)
        print(f"wrote {args.output} ({len(frame)} trials)", file=sys.stderr)
    else:
        try:
            sys.stdout.write(frame.to_csv(index=False))
            sys.stdout.flush()
        except BrokenPipeError:  # `trials | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


COMMANDS = {"run": cmd_run, "worker": cmd_worker, "studies": cmd_studies, "export": cmd_export, "train": cmd_train,
            "final": cmd_final, "predict": cmd_predict, "report": cmd_report, "dashboard": cmd_dashboard,
            "serve": cmd_serve, "trials": cmd_trials, "bench": cmd_bench, "schema": cmd_schema}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it in-process)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ms.InputError.exit_code
    with ms.StopSignals.installed() as stop:
        try:
            return COMMANDS[args.command](args)
        except ms.InputError as err:
            for line in err.problems:
                print(f"error: {line}", file=sys.stderr)
            return err.exit_code
        except ms.StorageUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except ms.SweepFailed as err:
            print(f"error: {err}", file=sys.stderr)
            if err.traceback:
                print(err.traceback.rstrip(), file=sys.stderr)
            return err.exit_code
        except KeyboardInterrupt as err:
            print("interrupted", file=sys.stderr)
            return ms.EXIT_TERMINATED if stop.terminated(err) else ms.EXIT_INTERRUPTED


def entry() -> None:
    """``python -m mnist_sweep`` and the ``mnist-sweep`` script: :func:`main`, then exit with its code.

    After a stop signal the storage is already consistent (the running trial was failed), but the
    signal can land inside XLA's C++ while it dispatches, and its runtime then crashes in the
    interpreter's teardown (exit 139 instead of 130, seen in 2 runs of 5): skip the teardown.
    """
    code = main()
    if code in (ms.EXIT_INTERRUPTED, ms.EXIT_TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
