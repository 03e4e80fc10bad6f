"""The one error type users see, and how a stop ends the command.

Every failure caused by input (a flag, a file, a model folder) is raised as `OlftError` with a
message that says what is wrong and how to fix it. The CLI prints it on one line and exits 2;
anything else is a bug and keeps its traceback. `Terminated` is how SIGTERM stops a run (or
an export, a prediction): `stop_on_sigterm` turns the signal into it, and `interrupted` is
the command's last word on either stop.

This module imports only `signal` and `sys`: `olft.__main__` imports it before it takes
SIGTERM, so nothing slow may come before that.
"""

import signal
import sys


class OlftError(Exception):
    """A user-facing error whose message names the fix."""


class LabelError(OlftError):
    """A label that is not one of the task's: an unknown class name or index, or a score that is
    not a number or is out of the task's range (`tasks.parse_label`). The row's texts may be fine,
    so a reader that can go without labels (`olft predict --no-labels`) names that way out."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: it stops the run as Ctrl-C does (folder kept, resumable); the CLI
    exits 143 (128 + 15) for it where Ctrl-C exits 130."""


def _terminate(signum, frame):
    raise Terminated


def stop_on_sigterm() -> "_StopOnSigterm":
    """SIGTERM (what schedulers and `kill` send) raises `Terminated` inside: the work stops as on
    Ctrl-C, its `finally` clauses run (temporary files removed, results.json says so), and the CLI
    prints one line. Without it SIGTERM ends the process on the spot, leaving its temporary files.
    Outside the main thread signals cannot be set: there it does nothing."""
    return _StopOnSigterm()


class _StopOnSigterm:
    """`stop_on_sigterm`'s context manager (a class, not contextlib's decorator: this module's
    imports stay `signal` and `sys`)."""

    def __enter__(self) -> None:
        try:
            self._previous = signal.signal(signal.SIGTERM, _terminate)
            self._set = True
        except ValueError:  # not the main thread: leave signals alone
            self._set = False

    def __exit__(self, *exc_info) -> None:
        if self._set:
            signal.signal(signal.SIGTERM, self._previous)


def stops_deferred(deliver: bool = True) -> "_StopsDeferred":
    """Hold Ctrl-C and SIGTERM inside, and deliver the first that came once it ends (as it would
    have been: through the handlers in place before), so a short step whose inputs are all there
    (a run's table and plots) is never cut half-way. An interrupted first `import matplotlib`
    leaves a half-imported module that every later plot of the process fails on, so a stop there
    could not even report itself. Where an exception ends the step it propagates and the held
    signal is dropped: the command stops all the same; so it is with `deliver` False (a step that
    runs because the command is already stopping). Outside the main thread it does nothing."""
    return _StopsDeferred(deliver)


class _StopsDeferred:
    """`stops_deferred`'s context manager."""

    def __init__(self, deliver: bool) -> None:
        self.deliver = deliver

    def __enter__(self) -> None:
        self.held: int | None = None
        self._previous: dict = {}
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._hold)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def _hold(self, signum, frame) -> None:
        self.held = self.held or signum

    def __exit__(self, exc_type, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self.held is not None and exc_type is None and self.deliver:
            signal.raise_signal(self.held)  # its Python handler runs before this returns


def interrupted(exc: BaseException) -> int:
    """The command's end on Ctrl-C, SIGTERM or a closed output pipe: one line on stderr where it
    can still be written, and its exit code, 128 + the signal's number (SIGTERM's 15 for
    `Terminated`, SIGPIPE's 13 for a `BrokenPipeError`, else SIGINT's 2), as a shell reports them."""
    if isinstance(exc, BrokenPipeError):
        silence_closed_output()
        return 141
    try:
        print("olft: interrupted.", file=sys.stderr)
    except OSError:  # stderr was a pipe whose reader is gone (killed with it): nothing can be said
        silence_closed_output()
    return 143 if isinstance(exc, Terminated) else 130


def silence_closed_output() -> None:
    """Point stdout and stderr at os.devnull, so that Python's flush at exit does not fail again on
    a pipe whose reader is gone (the recipe of Python's signal docs, "Note on SIGPIPE")."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # no file descriptor (a test's capture): nothing to flush into a pipe
            pass
