"""The one error type users see.

Every failure caused by input (a flag, a file, a model folder) is raised as `OlftError` with a
message that says what is wrong and how to fix it. The CLI prints it on one line and exits 2;
anything else is a bug and keeps its traceback. `Terminated` is how SIGTERM stops a run (or
an export, a prediction): `stop_on_sigterm` turns the signal into it.
"""

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class OlftError(Exception):
    """A user-facing error whose message names the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: it stops the run as Ctrl-C does (folder kept, resumable); the CLI
    exits 143 (128 + 15) for it where Ctrl-C exits 130."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (what schedulers and `kill` send) raises `Terminated` inside: the work stops as on
    Ctrl-C, its `finally` clauses run (temporary files removed, results.json says so), and the CLI
    prints one line. Without it SIGTERM ends the process on the spot, leaving its temporary files.
    Outside the main thread signals cannot be set: there it does nothing."""

    def handler(signum, frame):
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
