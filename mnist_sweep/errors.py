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


class SweepFailed(RuntimeError):
    """A run stopped because its trials kept failing (crashed, not pruned): likely a bug or a
    config that cannot train here. ``traceback`` is the first failure's, to fix it from.

    Example:
        >>> try:
        ...     ms.run(sweep)
        ... except SweepFailed as err:
        ...     print(err.traceback)
    """

    exit_code = 1

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class SweepInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (or SIGTERM): the running trial was failed, nothing is left RUNNING,
    and running the same sweep again resumes it. ``study`` is the study as it stands;
    ``signal`` the signal's number when one stopped it."""

    def __init__(self, message: str, study: object = None, signal: int | None = None) -> None:
        super().__init__(message)
        self.study = study
        self.signal = signal
