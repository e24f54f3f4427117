"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a single stderr line and exit code 2; anything else is a bug and keeps
its traceback.
"""

import difflib


class UserError(Exception):
    """Bad input: the message names the file (and row) and what is wrong with it."""


class SweepInterrupted(Exception):
    """Ctrl+C ended a sweep after its state was saved: `summary` is what it had done (the sweep's
    result, hiertune.sweep.results.SweepResult); the CLI says it in one line with the command that
    resumes, and exits 130."""

    def __init__(self, summary):
        super().__init__(summary.name)
        self.summary = summary


def first_line(exc: BaseException | str, limit: int = 160) -> str:
    """An exception (or a message) as one short line for a one-line error: its first line, or the
    exception's type when it has no text."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return text.splitlines()[0][:limit]


def did_you_mean(value, known, list_known: bool = False) -> str:
    """The hint after an unknown name: ` (did you mean 'x'?)`, else ` (known: a, b)` when
    `list_known` (short, closed lists), else nothing."""
    known = [str(k) for k in known]
    close = difflib.get_close_matches(str(value), known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(sorted(known))})" if list_known else ""
