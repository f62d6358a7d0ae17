"""The exceptions a run ends with, each with its exit code.

Everything that is the user's to fix raises :class:`InputError`; the CLI prints its lines
(one per problem, each naming the file and key) and exits with code 2. A storage that fails
under a running sweep (unreachable for longer than ``storage_retry.seconds``, or its disk full)
raises :class:`StorageUnavailable`: exit 75 (``EX_TEMPFAIL``), the study intact, and the same
command resumes once the database or the disk is back. Anything else is a bug or a per-trial
failure and is handled where it happens.

Every exit code the command line returns is here: 0 when it is done, each exception's
``exit_code`` otherwise, and 128 + the signal's number when a stop signal ended it
(:data:`EXIT_INTERRUPTED`, :data:`EXIT_TERMINATED`), as a shell reports a process a signal stopped.
"""

from __future__ import annotations

import signal as _signal

#: The exit code after Ctrl-C (SIGINT): 130.
EXIT_INTERRUPTED = 128 + _signal.SIGINT
#: The exit code after SIGTERM (``docker stop``, Kubernetes): 143.
EXIT_TERMINATED = 128 + _signal.SIGTERM


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

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_TERMINATED` after SIGTERM, else :data:`EXIT_INTERRUPTED`."""
        return EXIT_TERMINATED if self.signal == _signal.SIGTERM else EXIT_INTERRUPTED


class StorageUnavailable(RuntimeError):
    """The storage stopped taking a running sweep's reads or writes: unreachable for longer than
    the sweep's ``storage_retry.seconds``, or its disk is full. What is stored stays intact (each
    write is one transaction); the same command resumes the sweep once the storage is back.
    ``str(err)`` is one line naming the storage, its password redacted.

    Example:
        >>> try:
        ...     ms.run(sweep, storage="postgresql://db/sweeps")
        ... except StorageUnavailable as err:
        ...     print(err)  # postgresql://db/sweeps: not answering for 120 s (...); run again to resume
    """

    exit_code = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, try again later
