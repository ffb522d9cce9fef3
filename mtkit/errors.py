"""The base class of errors whose message is written for the user.

The CLI prints such an error as one `error: ...` line and exits non-zero, without a
traceback; anything else is a bug and keeps its traceback. `plural` words the counts in
such messages.
"""


class MtkitError(ValueError):
    """A problem with the user's input, files or environment; the message says what to fix."""


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """'1 sentence', '2 sentences' (or `nouns` for irregular plurals: '2 hypotheses')."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"
