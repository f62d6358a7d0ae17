"""What ships beside a final model: ``MODEL_CARD.md`` (always) and ``model.onnx`` (``--onnx``).

The card is generated from ``metrics.json`` and its provenance, never written by hand: what the
model is (its members and their configs, or the retrained config and seed), what it was trained and
chosen on (the data's source, sizes and sha256; validation for the choice, the test set once), how
good, big and fast it is, and the library versions. The ONNX file is Keras's own export (on JAX
through ``jax2onnx``; the extra ``pip install 'mnist-sweep[onnx]'``), then checked: ONNX Runtime
classifies the test images and the share of answers equal to Keras's goes into ``metrics.json``.
It takes the same input as the Keras model: flat images, ``side * side`` floats in [0, 1].

Example:
    >>> write_model_card(final.directory, final.metrics)
    PosixPath('studies/default/final/MODEL_CARD.md')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mnist_sweep._base.files import atomic_path, write_text_atomic
from mnist_sweep.errors import InputError

CARD_NAME, ONNX_NAME = "MODEL_CARD.md", "model.onnx"


def export_onnx(model: Any, folder: Path, x_check: np.ndarray) -> dict[str, Any]:
    """Write ``folder/model.onnx`` and check it on ``x_check`` against Keras; returns what goes into
    ``metrics.json`` (``onnx_file``, ``onnx_agreement``: the share of equal answers).

    Raises:
        InputError: the export's packages are missing (one line naming the extra to install).
    """
    try:
        import jax2onnx  # noqa: F401 - Keras imports it by name on the JAX backend
        import onnxruntime
    except ImportError as err:
        raise InputError(f"--onnx needs {err.name}: pip install 'mnist-sweep[onnx]'") from None
    model(x_check[:1])  # Keras exports only a model it has called
    with atomic_path(folder / ONNX_NAME) as tmp:
        model.export(str(tmp), format="onnx", verbose=False)
        session = onnxruntime.InferenceSession(str(tmp))
        name = session.get_inputs()[0].name
        onnx_answers = np.concatenate([np.argmax(session.run(None, {name: x_check[i:i + 1024]})[0], axis=1)
                                       for i in range(0, len(x_check), 1024)])
    keras_answers = np.argmax(model.predict(x_check, batch_size=1024, verbose=0), axis=1)
    return {"onnx_file": ONNX_NAME, "onnx_agreement": float(np.mean(onnx_answers == keras_answers))}


def model_card(metrics: Mapping[str, Any], member_configs: Mapping[int, Mapping[str, Any]] | None = None) -> str:
    """The card's Markdown, from ``metrics.json``'s contents (and the kept members' configs)."""
    provenance = metrics.get("provenance") or {}
    data = provenance.get("data") or {}
    members = list(metrics.get("members") or [])
    lines = ["# Model card", ""]
    if members:
        lines += [f"**What it is**: {_what(members)} of study `{metrics.get('study')}`, chosen on the validation "
                  "split among the study's kept models and their averages; the test set used once.", ""]
        lines += ["| trial | validation accuracy | config |", "|---|---|---|"]
        for trial in members:
            value = (metrics.get("member_validation_accuracy") or {}).get(str(trial))
            config = _config((member_configs or {}).get(trial, {}))
            lines.append(f"| {trial} | {_figure(value)} | {config} |")
        lines += ["", "Each member trained with the seed its sweep's seed plus its trial number."]
    else:
        lines += ["**What it is**: the config below, retrained on the training and validation images together "
                  f"with seed {metrics.get('seed')}, then tested once.", "",
                  f"Config: {_config(metrics.get('params') or {})}"]
    lines += ["", "## Figures", "",
              f"- test accuracy: **{_figure(metrics.get('test_accuracy'))}**"
              + (f" (best single member {_figure(metrics.get('best_member_test_accuracy'))})" if members else ""),
              f"- validation accuracy: {_figure(metrics.get('validation_accuracy'))}" if members else
              f"- test loss: {_figure(metrics.get('test_loss'))}",
              f"- parameters: {metrics.get('n_params', 0):,}"]
    if metrics.get("latency_ms_batch1") is not None:
        lines.append(f"- latency: {metrics['latency_ms_batch1']:.3f} ms per image at batch 1 (on the machine that "
                     "made this card)")
    if metrics.get("onnx_agreement") is not None:
        lines.append(f"- `{metrics['onnx_file']}`: ONNX Runtime's answers equal Keras's on "
                     f"{100 * metrics['onnx_agreement']:.2f}% of the test images")
    lines += ["", "## Data", "",
              f"- source: {data.get('source', (metrics.get('data') or {}).get('source', '?'))}",
              f"- images: {_sizes(data)}",
              f"- sha256 of the arrays: `{data.get('sha256', (metrics.get('data') or {}).get('sha256', '?'))}`",
              "", "## Made with", ""]
    versions = provenance.get("versions") or {}
    lines.append(", ".join(f"{name} {version}" for name, version in sorted(versions.items())) or "?")
    lines += [f"; Keras backend {metrics.get('backend', '?')}; {metrics.get('date', '')}", ""]
    lines.append("Generated from metrics.json by mnist_sweep; edit that, not this.")
    return "\n".join(lines) + "\n"


def write_model_card(folder: Path, metrics: Mapping[str, Any],
                     member_configs: Mapping[int, Mapping[str, Any]] | None = None) -> Path:
    """Write ``folder/MODEL_CARD.md`` (atomically); returns its path."""
    return write_text_atomic(Path(folder) / CARD_NAME, model_card(metrics, member_configs))


def _what(members: list[int]) -> str:
    return f"trial {members[0]}'s kept model" if len(members) == 1 else \
        f"the average of the kept models of trials {', '.join(map(str, members))}"


def _config(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_figure(v) if isinstance(v, float) else v}" for k, v in params.items()) or "?"


def _figure(value: Any) -> str:
    return "?" if value is None else f"{float(value):.4g}" if abs(float(value)) < 1e-2 else f"{float(value):.4f}"


def _sizes(data: Mapping[str, Any]) -> str:
    parts = [f"{data[k]:,} {k.removesuffix('_images')}" for k in ("train_images", "validation_images", "test_images")
             if isinstance(data.get(k), int)]
    side = data.get("side")
    return (", ".join(parts) or "?") + (f"; {side} x {side} pixels" if side else "")
