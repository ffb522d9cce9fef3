"""The base classes of errors whose message is written for the user.

The CLI prints such an error as one `error: ...` line and exits non-zero, without a
traceback: 2 for a `UsageError` (the command line or config asks for something mtkit refuses),
1 for any other `MtkitError`; anything else is a bug and keeps its traceback. `plural`
words the counts in such messages.
"""


class MtkitError(ValueError):
    """A problem with the user's input, files or environment; the message says what to fix."""


class UsageError(MtkitError):
    """The command line or config asks for something that cannot work; refused before any work
    is done (exit 2)."""


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """'1 sentence', '2 sentences' (or `nouns` for irregular plurals: '2 hypotheses')."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"
