"""Sweep files: safe YAML in, a validated :class:`~mnist_sweep.config.SweepConfig` out.

A sweep is named by a path (``my/sweep.yaml``) or by a bare name (``quick``), which is looked up
in ``./sweeps/`` first (your own sweeps) and then among the sweeps shipped inside the package
(``quick``, ``tutorial``, ``default``, read with :mod:`importlib.resources`, so they travel
with a plain ``pip install``). The JSON Schema of the format ships beside them.

Example:
    >>> load_sweep("quick").trials
    20
    >>> packaged_sweeps()
    ['default', 'quick', 'tutorial']
"""

from __future__ import annotations

import difflib
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from mnist_sweep.config import SweepConfig, parse_sweep
from mnist_sweep.errors import InputError

USER_SWEEPS_DIR = Path("sweeps")
DEFAULT_SWEEP = "default"
_SUFFIXES = (".yaml", ".yml")


def packaged_dir() -> Traversable:
    """The folder of the sweeps shipped inside the package."""
    return files("mnist_sweep") / "sweeps"


def packaged_sweeps() -> list[str]:
    """Names of the shipped sweeps."""
    return sorted(p.name.rsplit(".", 1)[0] for p in packaged_dir().iterdir() if p.name.endswith(_SUFFIXES))


class _SweepLoader(yaml.SafeLoader):
    """Safe YAML, plus: ``1e-3`` is a float (PyYAML says str) and a duplicate key is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:
                continue  # unhashable key: SafeLoader reports it
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


_SweepLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: str | Path | Traversable) -> Any:
    """Read a YAML file safely; any problem becomes an :class:`InputError` naming the file."""
    path = Path(path) if isinstance(path, str) else path
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a YAML file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return yaml.load(text, Loader=_SweepLoader)  # noqa: S506 - _SweepLoader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise InputError(f"{path}{where}: invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None


def resolve_sweep(name_or_path: str | Path | None = None) -> Path | Traversable:
    """The file a sweep name means: a path as given; a bare name in ``./sweeps/``, else shipped.

    ``None`` means ``default``.

    Raises:
        InputError: no such sweep; the message suggests a close name and lists the known ones.
    """
    name = str(name_or_path) if name_or_path is not None else DEFAULT_SWEEP
    path = Path(name)
    if path.suffix in _SUFFIXES or path.exists() or "/" in name or "\\" in name:
        return path
    folders: list[Path | Traversable] = [USER_SWEEPS_DIR, packaged_dir()]
    for folder in folders:
        for suffix in _SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for p in USER_SWEEPS_DIR.glob("*.y*ml")} | set(packaged_sweeps()))
    hint = difflib.get_close_matches(name, known, n=1)
    extra = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})"
    raise InputError(f"{name}: no such sweep file in ./sweeps/ or among the shipped sweeps{extra}")


def load_sweep(name_or_path: str | Path | None = None) -> SweepConfig:
    """Read and validate a sweep: a shipped name (``"quick"``), a name in ``./sweeps/``, or a path.

    A file without a ``name:`` takes its file name as the study name.

    Example:
        >>> load_sweep("tutorial").space.optimizer.choices
        ['sgd', 'adam']

    Raises:
        InputError: with one line per problem, all problems at once, each naming the file.
    """
    path = resolve_sweep(name_or_path)
    return parse_sweep(read_yaml(path), str(path), default_name=path.name.rsplit(".", 1)[0])


def sweep_json_schema() -> dict[str, Any]:
    """The JSON Schema of sweep files, as shipped beside the packaged sweeps."""
    schema = SweepConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
