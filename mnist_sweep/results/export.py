"""Export a study's best trial as a sweep file that ``train`` (and ``run``) accept as is.

The file is an ordinary sweep file: every axis fixed at the trial's value (``units_l0``,
``units_l1``, ... of a per-layer trial as ``layer_units``), the study's data and training
settings, ``trials: 1``, the seed the trial's weights were drawn with (``seed + trial number``),
no pruner, and ``source:`` saying where it came from (study, trial, storage without password,
validation accuracy, date). ``run`` on it reproduces the trial; ``train`` on it trains the
final model. Floats are written in their shortest exact form, so the params read back equal the
trial's bit for bit.

Example:
    >>> study = load_study("sqlite:///studies/mnist_sweep.db", "quick")
    >>> export_best(study)                     # studies/quick/best.yaml
    PosixPath('studies/quick/best.yaml')
    >>> fixed_params(load_sweep("studies/quick/best.yaml").space) == study.best_trial.params
    True
"""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.trial import TrialState

from mnist_sweep._base.files import atomic_path
from mnist_sweep._base.paths import export_path, sweep_name_of
from mnist_sweep.errors import InputError
from mnist_sweep.search.confirmation import chosen_trial
from mnist_sweep.storage._optuna_internals import storage_url_of
from mnist_sweep.storage.rdb import redact
from mnist_sweep.sweep.goals import accuracy_of
from mnist_sweep.sweep.loader import load_sweep
from mnist_sweep.sweep.params import fixed_params
from mnist_sweep.sweep.space import SearchSpace, layer_index

Format = Literal["yaml", "json"]
_SPACE_KEYS = set(SearchSpace.model_fields) - {"per_layer_units", "layer_units"}
_MISSING = object()


def best_config(study: optuna.Study, storage: str | None = None) -> dict[str, Any]:
    """The sweep-file mapping of ``study``'s best COMPLETE trial (see the module docstring).

    Args:
        study: a study made by ``run`` (its sweep is in the user attribute ``sweep``; without
            it the data and training settings are the defaults).
        storage: the storage URL for ``source.storage`` (default: read from the study); the
            password is masked.

    Raises:
        InputError: the study has no COMPLETE trial, or the trial has parameters that sweep
            files cannot express.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise InputError(f"study '{study.study_name}': no completed trial to export "
                         f"({len(study.get_trials(deepcopy=False))} trials in all)")
    best = chosen_trial(study)
    stored = study.user_attrs.get("sweep") or {}
    config: dict[str, Any] = {
        "name": f"{sweep_name_of(study.study_name)}-best",
        "description": f"best trial {best.number} of study '{study.study_name}' "
                       f"(validation accuracy {accuracy_of(best):.4f}), exported for 'train'",
        "trials": 1,
        "seed": int(stored.get("seed", 0)) + best.number,
        "pruner": {"name": "none"},
        "data": stored.get("data", {}),
        "space": _fixed_space(study.study_name, best),
    }
    for key in ("training", "heartbeat"):
        if key in stored:
            config[key] = stored[key]
    config["source"] = {
        "study": study.study_name,
        "trial": best.number,
        "storage": _storage_url(study, storage),
        "val_accuracy": accuracy_of(best),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if study.user_attrs.get("provenance"):
        config["source"]["provenance"] = study.user_attrs["provenance"]
    return config


def export_best(
    study: optuna.Study,
    path: str | Path | None = None,
    format: Format | None = None,  # noqa: A002 - the CLI's --format
    storage: str | None = None,
) -> Path:
    """Write :func:`best_config` of ``study`` to ``path`` atomically and return the path.

    Args:
        path: default ``studies/<study>/best.yaml`` (``best.json`` for JSON).
        format: ``yaml`` or ``json``; default: ``json`` for a ``.json`` path, else ``yaml``.

    The written file is read back with :func:`load_sweep` before it replaces ``path``, and every
    param of the trial must come back equal (axes the trial lacks take their defaults): a file
    that ``train`` would not accept, or would train differently, is never left behind.
    """
    if format is None:
        format = "json" if path is not None and Path(path).suffix.lower() == ".json" else "yaml"
    if format not in ("yaml", "json"):
        raise InputError(f"--format: want yaml or json, got {format!r}")
    config = best_config(study, storage)
    if path is None:
        path = export_path(study.study_name, format)
    path = Path(path)
    text = json.dumps(config, indent=2) + "\n" if format == "json" else _yaml_text(config, path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        try:
            params = fixed_params(load_sweep(tmp).space, str(path))
        except InputError as err:
            raise InputError([f"{path}: export is not a valid sweep file:", *err.problems]) from None
        best = chosen_trial(study)
        changed = {k: v for k, v in best.params.items() if params.get(k, _MISSING) != v}
        if changed:
            raise AssertionError(f"export of trial {best.number} does not round-trip: {changed} "
                                 f"read back as {params}")
    return path


def _fixed_space(study_name: str, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    params = dict(trial.params)
    layer_keys = sorted((k for k in params if layer_index(k) is not None), key=layer_index)
    widths = [params.pop(k) for k in layer_keys]
    unknown = sorted(set(params) - _SPACE_KEYS)
    if unknown:
        raise InputError(f"study '{study_name}': trial {trial.number} has parameters that sweep files do not "
                         f"know: {', '.join(unknown)}")
    space: dict[str, Any] = dict(params)
    if layer_keys:
        space.pop("units", None)
        space.update(per_layer_units=True, layer_units=widths)
    return space


def _storage_url(study: optuna.Study, given: str | None) -> str | None:
    url = given or storage_url_of(study)
    return redact(url) if url else None


def _yaml_text(config: dict[str, Any], path: Path) -> str:
    """The YAML file: a comment header, then the config. Names in the header are escaped to one
    line (:func:`_one_line`): a study name holding a newline cannot add lines, or keys, to the file."""
    source = config["source"]
    header = (f"# Best trial {source['trial']} of study '{_one_line(source['study'])}' "
              f"(validation accuracy {source['val_accuracy']:.4f}), exported {source['date']}.\n"
              "# Train the final model on all training data and test it once:\n"
              f"#   python -m mnist_sweep train {_one_line(str(path))}\n")
    return header + yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


class _Dumper(yaml.SafeDumper):
    """Safe YAML whose strings holding a control or line-break character are double-quoted, where
    YAML escapes them: each such value stays on its line and reads back exactly (PyYAML's own
    choice, single quotes, spreads a newline over lines and reads NEL back as a space)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if _one_line(value) != value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _one_line(text: str) -> str:
    """``text`` with every control, format or line/paragraph-separator character (YAML counts
    NEL, U+2028 and U+2029 as line breaks) written as a ``\\x..``/``\\u....`` escape."""
    return "".join(c if c == " " or unicodedata.category(c)[0] not in "CZ" else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000
                    else f"\\U{ord(c):08x}") for c in text)
