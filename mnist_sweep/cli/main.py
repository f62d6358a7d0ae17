"""``python -m mnist_sweep``: a thin command line over the library (:mod:`mnist_sweep`).

Each command parses its arguments, calls one library function and prints. Exit codes: 0 done,
1 the run failed (its trials kept crashing, or a worker did), 2 bad input (usage, sweep file,
data, storage), 130 interrupted (143 on SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from mnist_sweep._base.signals import StopSignals, Terminated
from mnist_sweep.cli.args import build_parser
from mnist_sweep.errors import InputError, StorageUnavailable, SweepFailed, SweepInterrupted

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_STORAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 75, 130, 143


def cmd_run(args: argparse.Namespace) -> int:
    """Run or resume a sweep (``--jobs N``: in N worker processes)."""
    import mnist_sweep as ms

    sweep = ms.with_overrides(ms.load_sweep(args.sweep), trials=args.trials, timeout=args.timeout, seed=args.seed,
                              data=args.data, origin="command line")
    worker = args.worker_id
    if args.command == "worker" and worker is None:
        from mnist_sweep.search.workers import default_worker_id

        worker = default_worker_id()
    try:
        ms.run(sweep, args.storage, args.study, jobs=args.jobs, new_study=args.new_study, worker_id=worker or 0,
               threads=args.threads, cpus=args.cpus)
    except SweepInterrupted as err:
        study = getattr(err.study, "study_name", None) or args.study or sweep.name
        jobs = f" --jobs {args.jobs}" if args.jobs > 1 else ""
        print(f"interrupted: resume with: python -m mnist_sweep run {args.sweep or 'default'} --study {study}"
              f"{_storage_arg(args)}{jobs}", file=sys.stderr)
        return EXIT_TERMINATED if err.signal == signal.SIGTERM else EXIT_INTERRUPTED
    return EXIT_OK


def _storage_arg(args: argparse.Namespace) -> str:
    from mnist_sweep.storage.rdb import redact

    return f" --storage {redact(args.storage)}" if args.storage else ""


def cmd_worker(args: argparse.Namespace) -> int:
    """Join a sweep's study as one worker (the loop of ``run``, no spawning); any machine can run one."""
    return cmd_run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure epoch speed, pruning efficiency, parallel scaling, overhead and anytime quality."""
    from mnist_sweep.bench.suite import PARTS, format_table, run_bench

    results = run_bench(fast=not args.full, parts=args.only or PARTS, anytime_seconds=args.anytime_seconds)
    if args.output:
        from pathlib import Path

        from mnist_sweep._base.files import write_text_atomic

        write_text_atomic(Path(args.output), json.dumps(results, indent=2))
    print(json.dumps(results) if args.json else format_table(results))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """Print or write the JSON Schema of sweep files."""
    from mnist_sweep.sweep.loader import sweep_json_schema

    text = json.dumps(sweep_json_schema(), indent=2) + "\n"
    if args.output:
        from pathlib import Path

        from mnist_sweep._base.files import write_text_atomic

        write_text_atomic(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_studies(args: argparse.Namespace) -> int:
    """List the studies in a storage with their trial counts and best values."""
    from mnist_sweep._base.paths import storage_url
    from mnist_sweep._base.settings import quiet_libraries
    from mnist_sweep.search.study import count_states, list_studies, load_study
    from mnist_sweep.storage.rdb import redact
    from mnist_sweep.sweep.goals import accuracy_of, best_trial

    quiet_libraries()
    summaries = list_studies(args.storage)
    if not summaries:
        print(f"no studies in {redact(storage_url(args.storage))}")
    for s in summaries:
        counts = count_states(load_study(args.storage, s.study_name))
        states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items())) or "no trials"
        best = best_trial(load_study(args.storage, s.study_name))
        best = f"best {accuracy_of(best):.4f} (trial {best.number})" if best else "no best yet"
        if len(s.directions) > 1:
            best += f"; objectives {', '.join(d.name.lower() for d in s.directions)}"
        print(f"{s.study_name}: {states}; {best}")
    return EXIT_OK


def _load_study(args: argparse.Namespace) -> Any:
    from mnist_sweep._base.settings import quiet_libraries
    from mnist_sweep.search.study import load_study

    quiet_libraries()
    return load_study(args.storage, args.study)


def cmd_export(args: argparse.Namespace) -> int:
    """Write a study's best trial as a fixed sweep file for ``train``."""
    from mnist_sweep._base.paths import storage_url
    from mnist_sweep.results.export import export_best
    from mnist_sweep.search.confirmation import chosen_trial
    from mnist_sweep.search.progress import short_params
    from mnist_sweep.sweep.goals import accuracy_of

    study = _load_study(args)
    path = export_best(study, args.output, args.format, storage=storage_url(args.storage))
    best = chosen_trial(study)
    print(f"wrote {path}: trial {best.number} of study '{study.study_name}' (val_accuracy={accuracy_of(best):.4f}) "
          f"| {short_params(best.params)}")
    print(f"next: python -m mnist_sweep train {path}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """Train an exported config on training + validation data, test it once, save model and metrics."""
    from pathlib import Path

    from mnist_sweep.final.retrain import train_final

    def progress(epoch: int, metrics: dict[str, float]) -> bool:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"epoch {epoch + 1}: {shown}", flush=True)
        return False

    print(f"training {args.config} on training + validation data ...", flush=True)
    output = Path(args.output) if args.output else None
    result = train_final(args.config, output_dir=output.parent if output else None, data=args.data,
                         epochs=args.epochs, seed=args.seed, on_epoch=progress,
                         model_name=output.name if output else "model.keras")
    print(f"test accuracy: {result.test_accuracy:.4f} ({100 * result.test_accuracy:.2f}%), "
          f"test loss {result.test_loss:.4f}, {result.seconds:.0f}s training")
    print(f"wrote {result.model_path}, {result.metrics_path.name}, {result.curves_path.name}")
    return EXIT_OK


def cmd_final(args: argparse.Namespace) -> int:
    """Build the final model from the study's kept models (chosen on validation), test it once, save it."""
    from mnist_sweep.final.ensemble import build_final

    final = build_final(_load_study(args), args.output, args.k, max_params=args.max_params,
                        max_latency_ms=args.max_latency_ms)
    what = f"trial {final.members[0]}" if len(final.members) == 1 else \
        f"the average of trials {', '.join(map(str, final.members))}"
    print(f"chose {what} (validation accuracy {final.metrics['validation_accuracy']:.4f})")
    print(f"test accuracy: {final.test_accuracy:.4f} ({100 * final.test_accuracy:.2f}%); best single member "
          f"{final.metrics['best_member_test_accuracy']:.4f}")
    print(f"{final.metrics['n_params']:,} parameters, {final.metrics['latency_ms_batch1']:.3f} ms per image at batch 1")
    print(f"wrote {final.model_path}, {final.metrics_path.name}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify digit images with a trained model; exit 2 if any file could not be read."""
    import mnist_sweep as ms
    from mnist_sweep._base.settings import prepare_process

    prepare_process("auto")
    results = ms.predict_files(args.model, args.images)
    if args.json:
        print(json.dumps(results, indent=2))
    for r in results:
        if "error" in r:
            print(f"error: {r['file']}: {r['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{r['file']}: {r['label']} (p={r['probability']:.3f})")
    return EXIT_INPUT if any("error" in r for r in results) else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Write a study's self-contained HTML report (plotly figures and a sortable trials table)."""
    from mnist_sweep.results.report import write_report

    study = _load_study(args)
    path = write_report(study, args.output, args.metrics)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; study '{study.study_name}', "
          f"{len(study.get_trials(deepcopy=False))} trials)")
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on the storage until Ctrl-C."""
    from mnist_sweep._base.paths import storage_url
    from mnist_sweep._base.settings import quiet_libraries
    from mnist_sweep.results.dashboard import serve

    quiet_libraries()
    serve(storage_url(args.storage), host=args.host, port=args.port)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the model's web page and /predict until Ctrl-C."""
    from mnist_sweep._base.settings import quiet_libraries
    from mnist_sweep.final.serve import serve_model

    quiet_libraries()
    serve_model(args.model, host=args.host, port=args.port)
    return EXIT_OK


def cmd_trials(args: argparse.Namespace) -> int:
    """Export one row per trial as CSV (params, timing, size, reasons, per-epoch validation accuracy)."""
    from mnist_sweep.results.tables import trials_frame, write_trials_csv

    frame = trials_frame(_load_study(args))
    if args.output:
        write_trials_csv(frame, args.output)
        print(f"wrote {args.output} ({len(frame)} trials)", file=sys.stderr)
    else:
        try:
            sys.stdout.write(frame.to_csv(index=False))
            sys.stdout.flush()
        except BrokenPipeError:  # `trials | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


COMMANDS = {"run": cmd_run, "worker": cmd_worker, "studies": cmd_studies, "export": cmd_export, "train": cmd_train,
            "final": cmd_final, "predict": cmd_predict, "report": cmd_report, "dashboard": cmd_dashboard,
            "serve": cmd_serve, "trials": cmd_trials, "bench": cmd_bench, "schema": cmd_schema}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it in-process)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_INPUT
    with StopSignals.installed() as stop:
        try:
            return COMMANDS[args.command](args)
        except InputError as err:
            for line in err.problems:
                print(f"error: {line}", file=sys.stderr)
            return EXIT_INPUT
        except StorageUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_STORAGE
        except SweepFailed as err:
            print(f"error: {err}", file=sys.stderr)
            if err.traceback:
                print(err.traceback.rstrip(), file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt as err:
            print("interrupted", file=sys.stderr)
            return EXIT_TERMINATED if stop.terminated(err) or isinstance(err, Terminated) else EXIT_INTERRUPTED


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
