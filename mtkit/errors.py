"""The base class of errors whose message is written for the user.

The CLI prints such an error as one `error: ...` line and exits non-zero, without a
traceback; anything else is a bug and keeps its traceback.
"""


class MtkitError(ValueError):
    """A problem with the user's input, files or environment; the message says what to fix."""
