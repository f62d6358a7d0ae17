"""Sweep files: safe YAML in, a validated :class:`~mnist_sweep.sweep.config.SweepConfig` out.

A sweep is named by a path (``my/sweep.yaml``) or by a bare name (``quick``), which is looked up
in ``./sweeps/`` first (your own sweeps) and then among the sweeps shipped inside the package
(``quick``, ``tutorial``, ``default``, ``best``, read with :mod:`importlib.resources`, so they travel
with a plain ``pip install``). The JSON Schema of the format ships beside them.

Files are read within limits, each a one-line :class:`InputError` (exit 2) when passed: at most
1 MiB, 50 levels of nesting and 100,000 values once YAML aliases are expanded (an alias bomb
stops while it is parsed), so no sweep file can exhaust memory, time or the stack.

Example:
    >>> load_sweep("quick").trials
    20
    >>> packaged_sweeps()
    ['best', 'default', 'quick', 'tutorial']
"""

from __future__ import annotations

import difflib
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from mnist_sweep.errors import InputError
from mnist_sweep.sweep.config import SweepConfig, parse_sweep

USER_SWEEPS_DIR = Path("sweeps")
DEFAULT_SWEEP = "default"
MAX_BYTES = 1 << 20  # a sweep file is a few kB; reading stops at 1 MiB
MAX_DEPTH = 50  # levels of nesting; a sweep has 4
MAX_NODES = 100_000  # values in the document, aliases expanded; a sweep has a few hundred
_SUFFIXES = (".yaml", ".yml")
_MERGE_TAG = "tag:yaml.org,2002:merge"


def packaged_dir() -> Traversable:
    """The folder of the sweeps shipped inside the package."""
    return files("mnist_sweep.sweep") / "shipped"


def packaged_sweeps() -> list[str]:
    """Names of the shipped sweeps."""
    return sorted(p.name.rsplit(".", 1)[0] for p in packaged_dir().iterdir() if p.name.endswith(_SUFFIXES))


class _SweepLoader(yaml.SafeLoader):
    """Safe YAML, plus: ``1e-3`` is a float (PyYAML says str), a duplicate key is an error, and limits.

    Limits, checked while the document is composed (before anything is built from it): at most
    :data:`MAX_DEPTH` levels of nesting (PyYAML composes recursively: 500 levels were a
    ``RecursionError``), and at most :data:`MAX_NODES` values counting each alias as the values it
    stands for, so a "billion laughs" alias bomb stops after a few thousand steps instead of
    expanding in validation or in an error message. Aliases within the budget work as in YAML;
    an alias inside its own anchor (a recursive document) is refused.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[yaml.Node, int] = {}  # node -> values it expands to, once composed
        self._own_keys: dict[yaml.Node, list[yaml.Node]] = {}
        self._expanded = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if node not in self._sizes:
                raise yaml.composer.ComposerError(None, None, "an alias inside its own anchor (a recursive "
                                                  "document) is not allowed", mark)
            self._count(self._sizes[node], mark)
            return node
        mark = self.peek_event().start_mark
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        before = self._expanded
        self._count(1, mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[node] = self._expanded - before
        if isinstance(node, yaml.MappingNode):
            self._own_keys[node] = [k for k, _ in node.value if k.tag != _MERGE_TAG]
        return node

    def _count(self, values: int, mark: yaml.Mark) -> None:
        self._expanded += values
        if self._expanded > MAX_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES} values once aliases are "
                                              "expanded (an alias bomb?)", mark)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # The keys the mapping was written with (merged ``<<: *base`` keys may be overridden, as YAML
        # says): recorded when composed, before SafeLoader's merging rewrites ``node.value``.
        own = self._own_keys.get(node, [k for k, _ in node.value])
        seen: dict[Any, yaml.Node] = {}
        for key_node in own:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
                seen[key] = first or key_node
            except TypeError:
                continue  # unhashable key: SafeLoader reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_clip(repr(key), 60)} (first on line {first.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)

    def construct_yaml_binary(self, node: yaml.ScalarNode) -> bytes:
        # base64 skips what is not in its alphabet ('@@@' decodes to b''), and pydantic reads bytes as str
        raise yaml.constructor.ConstructorError(None, None, "!!binary values have no place in a sweep file",
                                                node.start_mark)


_SweepLoader.add_constructor("tag:yaml.org,2002:binary", _SweepLoader.construct_yaml_binary)

_SweepLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: str | Path | Traversable) -> Any:
    """Read a YAML file safely; any problem becomes an :class:`InputError` naming the file.

    Within limits (one line each, exit 2): at most :data:`MAX_BYTES` bytes (refused from the file's
    size before it is read, and reading stops there whatever the size says), :data:`MAX_DEPTH`
    levels of nesting and :data:`MAX_NODES` values with aliases expanded (see ``_SweepLoader``).
    """
    path = Path(path) if isinstance(path, str) else path
    try:
        text = _read_bounded(path).decode("utf-8")
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
        raise InputError(f"{path}{where}: invalid YAML: {_clip(str(err.problem or err.context))}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: invalid YAML: {_first_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - a scalar PyYAML cannot build (2020-13-45, 10**5000, !!float abc)
        raise InputError(f"{path}: invalid YAML: {type(err).__name__}: {_first_line(err)}") from None


def _read_bounded(path: Path | Traversable) -> bytes:
    if isinstance(path, Path) and path.is_file() and path.stat().st_size > MAX_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes, over the {MAX_BYTES}-byte limit of a sweep file")
    with path.open("rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise InputError(f"{path}: over the {MAX_BYTES}-byte limit of a sweep file")
    return data


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return _clip(text.splitlines()[0] if text else type(err).__name__)


def _clip(text: str, limit: int = 200) -> str:
    """``text`` on one line and at most ``limit`` characters (a key or value can be a megabyte)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
