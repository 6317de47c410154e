"""Result lines: one JSON object per job, saying plainly what it cost.

A line is written once per job, flushed at once, and keyed by the job's key,
so that a journal can later append to the same file and a resumed run can
tell which keys are settled.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TextIO

import attrs

from runcomfy_async import Job, Outcome, RunComfyError

from ._base import UsageError

STATUSES: Final = (
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "uncertain",
    "error",
    "running",
    "queued",
)
"""Every ``status`` a result line can have, in the order the summary lists them."""


@attrs.frozen(kw_only=True)
class Record:
    """One job's result line (the fields are documented in ``docs/cli.md``)."""

    index: int
    key: str
    request_id: str | None
    status: str
    billed: bool | None
    emulated: bool
    video_url: str | None = None
    urls: tuple[str, ...] = ()
    cost: float | None = None
    error: str | None = None
    file: str | None = None
    download_error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """Read back a line this command wrote (raises KeyError, TypeError or ValueError)."""
        billed = data["billed"]
        if not isinstance(data["key"], str) or not isinstance(data["index"], int):
            raise TypeError("key must be a string and index a whole number")
        if data["status"] not in STATUSES or billed not in (True, False, None):
            raise ValueError(f"status {data['status']!r} or billed {billed!r} is not ours")
        return cls(
            index=data["index"],
            key=data["key"],
            request_id=data.get("request_id"),
            status=data["status"],
            billed=billed,
            emulated=bool(data.get("emulated")),
            video_url=data.get("video_url"),
            urls=tuple(data.get("urls") or ()),
            cost=data.get("cost"),
            error=data.get("error"),
            file=data.get("file"),
            download_error=data.get("download_error"),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the line's JSON object."""
        return {
            "index": self.index,
            "key": self.key,
            "request_id": self.request_id,
            "status": self.status,
            "billed": self.billed,
            "emulated": self.emulated,
            "video_url": self.video_url,
            "urls": list(self.urls),
            "cost": self.cost,
            "error": self.error,
            "file": self.file,
            "download_error": self.download_error,
        }


def status_word(job: Job) -> str:
    """Return the line's ``status``: the job's outcome, with ``running_on`` said ``running``."""
    outcome = job.outcome
    if outcome is None:
        return "running" if job.billed else "queued"
    return "running" if outcome is Outcome.RUNNING_ON else outcome.value


def error_text(error: BaseException, request_id: str | None = None) -> str:
    """``Type: message`` without the request id, which has its own field."""
    if isinstance(error, RunComfyError):
        message = error.message
        facts = []
        if error.status is not None:
            facts.append(f"HTTP {error.status}")
        if error.error_code is not None:
            facts.append(f"error_code {error.error_code}")
        if facts:
            message += f" ({', '.join(facts)})"
    else:
        message = str(error)
    rid = request_id or getattr(error, "request_id", None)
    if rid:
        # Some messages name the id in passing; the line has it already.
        message = re.sub(rf"\s*\(request(?: id)? {re.escape(rid)}\)", "", message)
    return f"{type(error).__name__}: {message}"


def record_of(
    job: Job,
    *,
    index: int,
    key: str,
    emulated: bool,
    status: str | None = None,
    error: str | None = None,
) -> Record:
    """Return the line of *job*: finished, or (with *status*) left unsettled on the server."""
    if status is not None or not job.done():
        # Left on the server when the user quit: billed if it ran; a queued
        # one will run and be billed unless someone cancels it.
        word = status or "queued"
        return Record(
            index=index,
            key=key,
            request_id=job.request_id,
            status=word,
            billed=True if word == "running" else job.billed,
            emulated=emulated,
            error=error,
        )
    failure = job.exception()
    result = job.result() if failure is None else None
    return Record(
        index=index,
        key=key,
        request_id=job.request_id,
        status=status_word(job),
        billed=job.billed,
        emulated=emulated,
        video_url=result.video_url if result else None,
        urls=tuple(result.urls) if result else (),
        cost=result.cost if result else None,
        error=error
        if error is not None
        else (error_text(failure, job.request_id) if failure else None),
    )


def not_sent(index: int, key: str, why: str, *, emulated: bool, status: str = "error") -> Record:
    """Return the line of a job that was never sent (nothing was billed)."""
    return Record(
        index=index,
        key=key,
        request_id=None,
        status=status,
        billed=False,
        emulated=emulated,
        error=why,
    )


@attrs.define
class ResultsFile:
    """Writes each job's line once, flushed, and keeps the totals the summary needs."""

    # None: sys.stdout as it is at each write (a live display swaps it).
    out: TextIO | None = None
    written: dict[str, Record] = attrs.field(factory=dict)

    def write(self, record: Record) -> bool:
        """Write *record* unless its key has a line already; return whether it was written."""
        if record.key in self.written:
            return False
        self.written[record.key] = record
        out = self.out if self.out is not None else sys.stdout
        out.write(json.dumps(record.to_json()) + "\n")
        out.flush()
        return True

    @property
    def cost(self) -> float:
        """The known cost of every billed job written so far."""
        return sum(r.cost or 0.0 for r in self.written.values() if r.billed)


def check_output(path: Path | None) -> None:
    """Refuse an ``--output`` that cannot be written, before anything is sent."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--output: {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UsageError(
            f"--output: the folder {path.parent} does not exist; create it first "
            f"(or give another path)"
        )


@contextmanager
def open_results(
    path: Path | None, *, append: bool = False, written: Mapping[str, Record] | None = None
) -> Iterator[ResultsFile]:
    """Open the results: *path* (created or replaced; appended to with *append*), or stdout.

    *written* names the lines the file already holds (a resumed run's), so
    that none is written twice.
    """
    if path is None:
        yield ResultsFile(written=dict(written or {}))
        return
    try:
        out = path.open("a" if append else "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--output: cannot write {path}: {exc.strerror or exc}") from exc
    with out:
        yield ResultsFile(out, written=dict(written or {}))
