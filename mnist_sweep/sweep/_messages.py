"""Error lines for bad sweeps: pydantic's validation errors and bad ``enqueue:`` entries, one line each.

Each line names the key path, the rule and the value received, and suggests a close key for a
typo; :func:`mnist_sweep.sweep.config.parse_sweep` prefixes the file::

    space.dropout.high: must be >= low (low=0.5, high=0.2)
    trails: unknown key (did you mean 'trials'?)

Example:
    >>> check_enqueue([{"unit": 64}], SearchSpace())
    ["enqueue.0.unit: unknown axis (did you mean 'units'?)"]
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from mnist_sweep.sweep.space import SearchSpace, describe_axis

SHOWN_CHARS = 80  # the most of a received value an error line shows


def tag_of(value: Any) -> str | None:
    """The ``name`` that picks a sampler's or pruner's model (a mapping's key, or an object's field)."""
    return value.get("name") if isinstance(value, Mapping) else getattr(value, "name", None)


def format_errors(err: ValidationError, known_keys: Collection[str]) -> list[str]:
    """One line per problem pydantic found; an unknown key gets the closest of ``known_keys``."""
    lines = []
    for e in err.errors(include_url=False):
        loc = _format_loc(e["loc"])
        kind = e["type"]
        if kind == "extra_forbidden":
            key = str(e["loc"][-1])[:100]
            hint = difflib.get_close_matches(key, list(known_keys), n=1, cutoff=0.7)
            lines.append(f"{loc}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        elif kind == "missing":
            lines.append(f"{loc}: required key is missing")
        elif kind in ("value_error", "assertion_error"):
            lines.append(f"{loc}: {_clip(e['msg'].removeprefix('Value error, '), 300)}")
        elif kind == "unknown_name":
            lines.append(f"{loc}.name: {e['msg']} (got {_short(tag_of(e['input']))})")
        else:
            lines.append(f"{loc}: {_clip(e['msg'], 300)} (got {_short(e['input'])})")
    return lines


def check_enqueue(enqueue: Sequence[Any], space: SearchSpace) -> list[str]:
    """One line per enqueued value that names no axis or lies outside the space."""
    problems = []
    for i, params in enumerate(enqueue):
        if not isinstance(params, Mapping):
            problems.append(f"enqueue.{i}: must be a mapping of axis: value (got {_short(params)})")
            continue
        for key, value in params.items():
            where = f"enqueue.{i}.{_clip(str(key), 40)}"
            axis = space.axis_of(str(key))
            if axis is None:
                hint = difflib.get_close_matches(str(key)[:100], list(space.axes()), n=1)
                problems.append(f"{where}: unknown axis" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
                continue
            if not axis.contains(value):
                space_text = _clip(describe_axis(axis), 120)
                problems.append(f"{where}: {_short(value)} is outside the search space ({space_text})")
    return problems


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if len(parts) >= 2 and parts[0] in ("sampler", "pruner"):
        del parts[1]  # the union's tag, e.g. sampler.tpe.seed -> sampler.seed
    return ".".join(_clip(str(p), 40) for p in parts) or "(top level)"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 60, 40, 60


def _short(value: Any) -> str:
    """``value`` as shown in an error: a bounded repr (a few items of a few levels, never the whole
    of a huge or deeply nested value), on one line, at most :data:`SHOWN_CHARS` characters."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int of more digits than Python converts to text
        text = f"<{type(value).__name__}>"
    return _clip(text, SHOWN_CHARS)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
