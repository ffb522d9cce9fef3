"""The base classes of errors whose message is written for the user.

The CLI prints such an error as one `error: ...` line and exits non-zero, without a
traceback: 2 for a `UsageError` (the command line or config asks for something mtkit refuses),
1 for any other `MtkitError`; anything else is a bug and keeps its traceback.
"""


class MtkitError(ValueError):
    """A problem with the user's input, files or environment; the message says what to fix."""


class UsageError(MtkitError):
    """The command line or config asks for something that cannot work; refused before any work
    is done (exit 2)."""
