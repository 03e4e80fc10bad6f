"""The one error type users see.

Every failure caused by input (a flag, a file, a model folder) is raised as `OlftError` with a
message that says what is wrong and how to fix it. The CLI prints it on one line and exits 2;
anything else is a bug and keeps its traceback. `Terminated` is how SIGTERM stops a run.
"""


class OlftError(Exception):
    """A user-facing error whose message names the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: it stops the run as Ctrl-C does (folder kept, resumable); the CLI
    exits 143 (128 + 15) for it where Ctrl-C exits 130."""
