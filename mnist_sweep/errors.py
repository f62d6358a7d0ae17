"""The one exception type for bad input: sweep files, data files, CLI arguments, storages.

Everything that is the user's to fix raises :class:`InputError`; the CLI prints its lines
(one per problem, each naming the file and key) and exits with code 2. Anything else is a
bug or a per-trial failure and is handled where it happens.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user. ``str(err)`` is one line per problem.

    Example:
        >>> err = InputError(["sweeps/x.yaml: trials: must be >= 1 (got 0)"])
        >>> str(err)
        'sweeps/x.yaml: trials: must be >= 1 (got 0)'
    """

    exit_code = 2

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
