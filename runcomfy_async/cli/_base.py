"""Names every part of the command shares: its name, exit codes, usage errors, plurals."""

from __future__ import annotations

from typing import Final

PROG: Final = "runcomfy-async"

EXIT_OK: Final = 0
"""Every job succeeded (or the single call was answered)."""
EXIT_FAILED: Final = 1
"""Some job did not succeed, or a single call failed."""
EXIT_USAGE: Final = 2
"""Bad options or bad input: nothing was submitted."""
EXIT_INTERRUPTED: Final = 130
"""Ctrl-C (or SIGTERM)."""


class UsageError(Exception):
    """Bad options or input, already phrased for the user (one message a line)."""

    def __init__(self, *messages: str) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


def plural(count: int, word: str, many: str | None = None) -> str:
    """Return ``"1 request"``, ``"3 requests"``: a count with its noun agreeing."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {many if many is not None else word + 's'}"
