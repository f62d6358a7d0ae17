"""Stop signals: Ctrl-C and SIGTERM stop a run cleanly, in a terminal, a container or a notebook.

The first SIGINT or SIGTERM raises ``KeyboardInterrupt`` (:class:`Terminated` for SIGTERM), so
Optuna fails the running trial instead of leaving it RUNNING; later ones are ignored so that
clean-up is not cut short (a terminal's Ctrl-C also reaches ``run --jobs`` workers, which it
forwards). The signal is also remembered: an exception raised from a handler can be swallowed
where it lands (a finalizer, a library's ``except BaseException``), so the sweep loop asks
:meth:`StopSignals.received` after every epoch and between trials. Inside a storage call
(:func:`deferring_stops`) the first signal raises nothing: cut there, a trial just created by
``study.ask`` would stay RUNNING with nobody to fail it; the loop acts on it at its next question.

Example:
    >>> with StopSignals.installed() as stop:
    ...     run_sweep(sweep, url, options=LoopOptions(should_stop=stop.received))
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_deferring = 0  # storage calls in flight on the main thread, where a stop signal only is remembered
_deferred: list[StopSignals] = []  # the handler whose signal came inside such a call


@contextlib.contextmanager
def deferring_stops() -> Iterator[None]:
    """A block (one storage call) that the first stop signal must not cut. The signal is remembered:
    a sweep loop (:attr:`StopSignals.polled`) acts on it at its next question; anything else gets
    its ``KeyboardInterrupt`` as the block ends."""
    global _deferring
    main = threading.current_thread() is threading.main_thread()
    if main:
        _deferring += 1
    try:
        yield
    finally:
        if main:
            _deferring -= 1
            if not _deferring and _deferred:
                stop = _deferred.pop()
                if not stop.polled:
                    raise stop.exception()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so Optuna marks the running trial FAIL instead of leaving it RUNNING."""


class StopSignals:
    """The handler for SIGINT and SIGTERM (see the module docstring)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.polled = False  # a sweep loop asks received() between trials and epochs

    def __call__(self, signum: int, frame: Any) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        self.signum = signum
        if _deferring:
            _deferred.append(self)
            return
        raise self.exception()

    def received(self) -> bool:
        """True once a stop signal arrived."""
        return self.signum is not None

    def terminated(self, err: BaseException | None = None) -> bool:
        """True when SIGTERM (not Ctrl-C) stopped the run."""
        return isinstance(err, Terminated) or self.signum == signal.SIGTERM

    def unraisable(self, report: Any) -> None:
        """``sys.unraisablehook``: our stop landed in a finalizer (e.g. a weakref callback during a
        garbage collection), where Python can only print it with a traceback. It is remembered
        and acted on at the next epoch or trial, so it needs no traceback; others are printed."""
        if self.signum is not None and isinstance(report.exc_value, KeyboardInterrupt):
            return
        sys.__unraisablehook__(report)

    def exception(self) -> KeyboardInterrupt:
        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[StopSignals]:
        """Install a handler for the block and restore the previous ones after it.

        Only the main thread can set signal handlers; elsewhere the handler is returned unused
        (``received`` stays False). A SIGINT that is ignored (a background job of a script) or
        handled by someone else (not Python's default) is left alone. Inside a block that already
        installed one (the CLI's, around ``run``), that one is returned.
        """
        current = signal.getsignal(signal.SIGTERM)
        if isinstance(current, StopSignals):
            yield current
            return
        stop = cls()
        if threading.current_thread() is not threading.main_thread():
            yield stop
            return
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, stop)}
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, stop)
        previous_unraisable, sys.unraisablehook = sys.unraisablehook, stop.unraisable
        try:
            yield stop
        finally:
            sys.unraisablehook = previous_unraisable
            for signum, handler in previous.items():
                signal.signal(signum, handler)
