"""The one error type users see.

Every failure caused by input (a flag, a file, a model folder) is raised as `OlftError` with a
message that says what is wrong and how to fix it. The CLI prints it on one line and exits 2;
anything else is a bug and keeps its traceback.
"""


class OlftError(Exception):
    """A user-facing error whose message names the fix."""
