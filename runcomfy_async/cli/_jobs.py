"""``runcomfy-async jobs [JOURNAL]``: what a journal knows of each job, read-only.

The journal is read through its own read-only connection
(:meth:`SQLiteJournal.read`): SQLite's WAL mode lets a reader see the last
commit without waiting for the writer, so this works while a run writes
the journal, and after a crash left its ``-wal`` file behind.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio

from runcomfy_async import JournalError, JournalRecord, SQLiteJournal

from ._base import EXIT_OK, UsageError, plural
from ._results import STATUSES
from ._resume import JOURNAL_SUFFIX

STATE_ORDER: Final = (
    *STATUSES,
    "running_on",
    "accepted",
    "intent",
)
"""States in the order the count lists them (the result statuses first)."""

_BILLED: Final = {"succeeded": True, "failed": True, "running": True, "running_on": True}
"""States whose job ran: billed, whatever else is known."""


def billed(record: JournalRecord) -> bool | None:
    """Return whether *record*'s job is billed: True, False, or None (nobody can tell yet).

    A job that ran is billed; one never accepted (no request id) that did
    not end uncertain was never created; one cancelled while queued did not
    run. An accepted or queued one will run (and be billed) unless someone
    cancels it; an ``intent`` or ``uncertain`` one may exist unseen.
    """
    if record.state in _BILLED:
        return True
    if record.state in {"intent", "uncertain"}:
        return None
    if record.request_id is None or record.state == "cancelled":
        return False
    return None


def cost(record: JournalRecord) -> float | None:
    """Return the cost the server reported for *record*'s job, if it did."""
    value = (record.result or {}).get("cost")
    return float(value) if isinstance(value, (int, float)) else None


def find_journal(given: str | None, cwd: Path) -> Path:
    """Return the journal to list: *given*, else the one ``*.journal`` file in *cwd*."""
    if given is not None:
        return Path(given)
    found = sorted(p for p in cwd.glob(f"*{JOURNAL_SUFFIX}") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(
            f"no journal given, and no *{JOURNAL_SUFFIX} file here: name one "
            f"(run --output OUT keeps it as OUT{JOURNAL_SUFFIX})"
        )
    raise UsageError(
        "no journal given, and several here: name one of " + ", ".join(p.name for p in found)
    )


def to_json(record: JournalRecord) -> dict[str, Any]:
    """Return one job of the journal as a JSON object."""
    result = record.result or {}
    return {
        "key": record.key,
        "request_id": record.request_id,
        "state": record.state,
        "billed": billed(record),
        "cost": cost(record),
        "video_url": result.get("video_url"),
        "error": record.error,
        "model_id": record.model_id or None,
        "updated": record.updated,
    }


def summary_lines(records: Sequence[JournalRecord]) -> list[str]:
    """Return the count by state, by billing, the known cost, and what to do if uncertain."""
    states = Counter(record.state for record in records)
    order = [s for s in STATE_ORDER if states[s]] + sorted(set(states) - set(STATE_ORDER))
    by_state = ", ".join(f"{states[s]} {s}" for s in order) or "none"
    bills = Counter(billed(record) for record in records)
    total = sum(cost(record) or 0.0 for record in records if billed(record))
    lines = [
        f"{plural(len(records), 'job')}: {by_state}",
        (
            f"billing: {bills[True]} billed, {bills[False]} not billed, {bills[None]} "
            f"unknown; known cost ${total:.2f}"
        ),
    ]
    unsure = states["intent"] + states["uncertain"]
    if unsure:
        lines.append(
            f"{plural(unsure, 'job')} intent or uncertain: its submit was sent and its answer "
            "never recorded (in flight now, if a run is going; else lost). Such a job may "
            "exist and be billed: check RunComfy's dashboard; the batch's command with "
            "--resubmit-uncertain sends them again"
        )
    return lines


def list_jobs(given: str | None, *, as_json: bool) -> int:
    """Print every job of a journal and the count by state; return the exit code.

    Jobs go to stdout (a table, or one JSON object a line with ``as_json``);
    the count goes to stdout after the table, or to stderr with JSON.

    Raises:
        UsageError: No journal to read.

    """
    path = find_journal(given, Path.cwd())
    try:
        records = anyio.run(SQLiteJournal.read, path)
    except JournalError as exc:
        raise UsageError(str(exc)) from exc
    if as_json:
        for record in records:
            print(json.dumps(to_json(record)))  # noqa: T201 - the command's output
        for line in summary_lines(records):
            print(f"{path}: {line}", file=sys.stderr)  # noqa: T201
        return EXIT_OK
    rows = [
        (
            r.key,
            r.request_id or "-",
            r.state,
            {True: "billed", False: "not billed", None: "unknown"}[billed(r)],
            "-" if cost(r) is None else f"${cost(r):.2f}",
        )
        for r in records
    ]
    header = ("key", "request id", "state", "billed", "cost")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())  # noqa: T201
    print()  # noqa: T201
    for line in summary_lines(records):
        print(f"{path}: {line}")  # noqa: T201
    return EXIT_OK
