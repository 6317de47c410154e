"""Reporting: the one place that writes to the terminal (stderr).

Fed by the library's events (``RunComfy(hooks=[reporter.hook])``) and by the
run loop's result lines. Three forms:

- a live display (rich) when stderr is a terminal: one progress bar redrawn in
  place, with the accepted and finished lines scrolling above it;
- a plain log, one line per event, when stderr is not a terminal (or rich is
  not installed), and a progress line only when something changed;
- JSON, one object per event (``--log-format json``); ``--quiet`` keeps only
  warnings, errors and the summary.

Results never come here: they are data, and go to stdout or ``--output``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs

from runcomfy_async import (
    ConnectError,
    Event,
    Job,
    JobStatusChanged,
    JobSubmitted,
    RequestRetried,
    Running,
)

from ._base import PROG, plural
from ._results import STATUSES, Record

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

Mode: TypeAlias = Literal["live", "text", "json", "quiet"]

RICH_HINT: Final = (
    "for a live progress display, install the command's extra: pip install 'runcomfy-async[cli]'"
)
SLOWEST_SHOWN: Final = 3


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal that can redraw a line in place."""
    try:
        return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def rich_available() -> bool:
    """Whether the optional rich package can be imported."""
    try:
        import rich.progress  # noqa: F401, PLC0415 - only the live display needs it
    except ImportError:
        return False
    return True


def choose_mode(*, quiet: bool, log_format: str) -> tuple[Mode, str | None]:
    """Pick the display for this run; return it and a hint to show, if any."""
    if log_format == "json":
        return "json", None
    if quiet:
        return "quiet", None
    if not stderr_is_terminal():
        return "text", None
    if not rich_available():
        return "text", RICH_HINT
    return "live", None


@attrs.frozen(kw_only=True)
class Summary:
    """The end of a run, in numbers."""

    statuses: Mapping[str, int]
    billed: Mapping[str, int]
    cost: float
    emulated: bool
    jobs: int
    requests: int
    seconds: float
    slowest: Sequence[tuple[str, str | None, float]]
    results: str
    downloads: str | None
    resumed: int = 0
    """Jobs whose line was already in the results file when this run began."""
    journal: str | None = None
    """The journal this run kept, if any."""

    def to_json(self) -> dict[str, Any]:
        """Return the summary as one JSON object."""
        return {
            "jobs": self.jobs,
            "statuses": dict(self.statuses),
            "billed": dict(self.billed),
            "cost": round(self.cost, 6),
            "emulated": self.emulated,
            "requests": self.requests,
            "requests_per_job": round(self.per_job, 2),
            "seconds": round(self.seconds, 3),
            "slowest": [
                {"key": key, "request_id": rid, "seconds": round(s, 3)}
                for key, rid, s in self.slowest
            ],
            "results": self.results,
            "downloads": self.downloads,
            "resumed": self.resumed,
            "journal": self.journal,
        }

    def tally(self) -> str:
        """``10 succeeded, 1 failed`` (statuses in the documented order)."""
        parts = [
            plural(self.statuses[s], s, s) if s != "error" else plural(self.statuses[s], s)
            for s in STATUSES
            if self.statuses.get(s)
        ]
        return ", ".join(parts) or "no jobs"

    def billing(self) -> str:
        """``11 billed, 1 not billed, 0 unknown`` and the cost."""
        parts = [
            f"{self.billed.get('yes', 0)} billed",
            f"{self.billed.get('no', 0)} not billed",
        ]
        if self.billed.get("unknown"):
            parts.append(f"{self.billed['unknown']} unknown")
        cost = f"cost ${self.cost:.2f}"
        if self.emulated:
            cost += " (emulated: nothing was billed)"
        return ", ".join(parts) + f"; {cost}"

    @property
    def per_job(self) -> float:
        """Requests per job this run handled (lines already written took none)."""
        handled = self.jobs - self.resumed
        return self.requests / handled if handled > 0 else 0.0

    def resumed_text(self) -> str:
        """``150 of 200 lines were already in the results file``."""
        return (
            f"{self.resumed} of {plural(self.jobs, 'line')} "
            f"{'was' if self.resumed == 1 else 'were'} already in {self.results} "
            "(counted above; not run again)"
        )

    def lines(self) -> list[str]:
        """Return the summary as plain lines."""
        per_job = self.per_job
        lines = [
            f"{plural(self.jobs, 'job')}: {self.tally()} in {self.seconds:.1f} s",
            f"billing: {self.billing()}",
            f"requests: {self.requests} ({per_job:.1f} per job)",
        ]
        if self.resumed:
            lines.append(f"resumed: {self.resumed_text()}")
        if self.slowest:
            slow = ", ".join(f"{key} {s:.1f} s" for key, _, s in self.slowest)
            lines.append(f"slowest: {slow}")
        lines.append(f"results: {self.results}")
        if self.journal:
            lines.append(f"journal: {self.journal}")
        if self.downloads:
            lines.append(f"videos: {self.downloads}")
        return lines


@attrs.define
class _Tally:
    """What the display counts, from events and result lines."""

    total: int = 0
    accepted: set[int] = attrs.field(factory=set)
    running: set[int] = attrs.field(factory=set)
    settled: Counter[str] = attrs.field(factory=Counter)
    done: set[int] = attrs.field(factory=set)
    cost: float = 0.0
    since: dict[int, float] = attrs.field(factory=dict)
    took: dict[int, tuple[str, str | None, float]] = attrs.field(factory=dict)

    @property
    def queued(self) -> int:
        return len(self.accepted - self.running - self.done)

    @property
    def unsent(self) -> int:
        return self.total - len(self.accepted | self.done)


class Reporter:
    """Everything the command says on stderr, in the chosen form.

    Args:
        mode: ``live``, ``text``, ``json`` or ``quiet``.
        verbose: Also report retries.
        requests: Reads how many requests the client has sent so far.

    """

    def __init__(self, mode: Mode = "text", *, verbose: bool = False) -> None:
        self.mode: Mode = mode
        self.verbose = verbose
        self.requests: Callable[[], int] = lambda: 0
        self._jobs: dict[Job, tuple[int, str]] = {}
        self._tally = _Tally()
        self._said: set[str] = set()
        self._last_progress = ""
        self._started = time.monotonic()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __repr__(self) -> str:
        t = self._tally
        return f"<Reporter {self.mode} total={t.total} done={len(t.done)}>"

    # -- writing ---------------------------------------------------------------

    def _write(self, text: str) -> None:
        if self._progress is not None:
            # Printed above the bar, which is then redrawn below it.
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
            return
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def _emit(self, event: str, text: str, **fields: Any) -> None:
        """One event: a line of text, or a JSON object."""
        if self.mode == "json":
            self._write(json.dumps({"event": event, **fields}))
        elif self.mode != "quiet":
            self._write(text)

    def say(self, message: str) -> None:
        """Say a notice (not in quiet mode)."""
        self._emit("notice", f"{PROG}: {message}", message=message)

    def warn(self, message: str) -> None:
        """Something the user must see, in every mode."""
        if self.mode == "json":
            self._write(json.dumps({"event": "warning", "message": message}))
        else:
            self._write(f"{PROG}: {message}")

    def warn_once(self, topic: str, message: str) -> None:
        """Warn about *topic* the first time only."""
        if topic not in self._said:
            self._said.add(topic)
            self.warn(message)

    def error(self, message: str) -> None:
        """Report an error, in every mode."""
        if self.mode == "json":
            self._write(json.dumps({"event": "error", "message": message}))
        else:
            self._write(f"{PROG}: error: {message}")

    # -- a run -------------------------------------------------------------------

    def start(self, total: int, requests: Callable[[], int]) -> None:
        """Begin a run of *total* jobs; the live display, if any, appears."""
        self._tally.total = total
        self.requests = requests
        self._started = time.monotonic()
        if self.mode == "live":
            self._progress = _live_progress()
            self._task = self._progress.add_task("jobs", total=total, detail=self._detail())
            self._progress.start()

    def stop(self) -> None:
        """End the run: the live display stops, its last state left on screen."""
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None

    def track(self, job: Job, index: int, key: str) -> None:
        """Name *job* by its index and key in every later message."""
        self._jobs[job] = (index, key)

    def hook(self, event: Event) -> None:
        """Observe one library event (pass this method in ``RunComfy(hooks=...)``)."""
        match event:
            case JobSubmitted(job=job):
                index, key = self._jobs.get(job, (-1, "?"))
                self._tally.accepted.add(index)
                self._tally.since[index] = time.monotonic()
                # Said the moment the server accepts a job, so that even a
                # crash right after never leaves a billed job unknown.
                self._emit(
                    "accepted",
                    f"accepted  #{index}  {key}  {job.request_id}",
                    index=index,
                    key=key,
                    request_id=job.request_id,
                )
            case JobStatusChanged(job=job, new=Running()):
                index, key = self._jobs.get(job, (-1, "?"))
                if index not in self._tally.running:
                    self._tally.running.add(index)
                    self._emit(
                        "running",
                        f"running   #{index}  {key}  {job.request_id}",
                        index=index,
                        key=key,
                        request_id=job.request_id,
                    )
            case RequestRetried(error=ConnectError() as error):
                self.warn_once("connect", f"no answer from the API yet ({error.message}); retrying")
            case RequestRetried(kind=kind, attempt=attempt, delay=delay, error=error):
                if self.verbose:
                    self._emit(
                        "retry",
                        f"retry     {kind} #{attempt} in {delay:.1f} s: {error}",
                        kind=kind,
                        attempt=attempt,
                        delay=delay,
                        error=str(error),
                    )
            case _:
                pass
        self._refresh()

    def finished(self, record: Record) -> None:
        """Report a job whose result line was written."""
        tally = self._tally
        if record.index in tally.done:
            return
        tally.done.add(record.index)
        tally.settled[record.status] += 1
        if record.billed and record.cost:
            tally.cost += record.cost
        since = tally.since.get(record.index)
        if since is not None and record.status in {"succeeded", "failed"}:
            tally.took[record.index] = (record.key, record.request_id, time.monotonic() - since)
        billed = {True: "billed", False: "not billed", None: "billing unknown"}[record.billed]
        detail = record.error or record.video_url or ""
        self._emit(
            "finished",
            f"finished  #{record.index}  {record.key}  {record.status}  {billed}  "
            f"{record.request_id or '-'}  {detail}".rstrip(),
            **record.to_json(),
        )
        if record.file or record.download_error:
            self._emit(
                "saved",
                f"saved     #{record.index}  {record.key}  "
                f"{record.file or 'not saved: ' + str(record.download_error)}",
                index=record.index,
                key=record.key,
                file=record.file,
                download_error=record.download_error,
            )
        self._refresh()

    def _detail(self) -> str:
        t = self._tally
        done = len(t.done)
        per_job = self.requests() / max(len(t.accepted | t.done), 1)
        parts = [
            f"{t.settled['succeeded']} ok",
            f"{done - t.settled['succeeded']} not ok",
            f"{t.queued} queued",
            f"{len(t.running - t.done)} running",
            f"{per_job:.1f} req/job",
            f"${t.cost:.2f}",
        ]
        return "  ".join(parts)

    def _refresh(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task, completed=len(self._tally.done), detail=self._detail()
            )

    def progress(self) -> None:
        """Print a progress line in the plain log, if anything changed since the last."""
        if self.mode in {"live", "quiet"}:
            self._refresh()
            return
        t = self._tally
        done = len(t.done)
        settled = ", ".join(f"{t.settled[s]} {s}" for s in STATUSES if t.settled[s])
        line = (
            f"progress  {done}/{t.total} done{': ' + settled if settled else ''}; "
            f"{t.queued} queued, {len(t.running - t.done)} running, {t.unsent} unsent; "
            f"{plural(self.requests(), 'request')}; ${t.cost:.2f} so far"
        )
        if line == self._last_progress:
            return  # nothing new: a repeated line tells the user nothing
        self._last_progress = line
        elapsed = time.monotonic() - self._started
        eta = (
            f"; about {elapsed / done * (t.total - done):.0f} s left" if 0 < done < t.total else ""
        )
        self._emit(
            "progress",
            line + eta,
            done=done,
            total=t.total,
            queued=t.queued,
            running=len(t.running - t.done),
            unsent=t.unsent,
            requests=self.requests(),
            cost=round(t.cost, 6),
            **{s: t.settled[s] for s in STATUSES if t.settled[s]},
        )

    def slowest(self) -> list[tuple[str, str | None, float]]:
        """Return the slowest finished jobs (key, request id, seconds from acceptance)."""
        took = sorted(self._tally.took.values(), key=lambda item: -item[2])
        return took[:SLOWEST_SHOWN]

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self._started

    def summary(self, summary: Summary) -> None:
        """Report the end of the run: a table on a terminal, lines or JSON otherwise."""
        if self.mode == "json":
            self._write(json.dumps({"event": "summary", **summary.to_json()}))
            return
        if self.mode == "live" and rich_available():
            _print_table(summary)
            return
        for line in summary.lines():
            self._write(f"{PROG}: {line}")


def _live_progress() -> Progress:
    from rich.progress import (  # noqa: PLC0415 - the extra is optional
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=_console(),
        refresh_per_second=4,
        # Results on the same screen go above the bar; a redirected stdout
        # (a file, a pipe) must get them untouched.
        redirect_stdout=_stdout_is_terminal(),
        redirect_stderr=False,
    )


def _console() -> Console:
    from rich.console import Console  # noqa: PLC0415

    return Console(file=sys.stderr, highlight=False)


def _print_table(summary: Summary) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        title=f"{PROG}: {plural(summary.jobs, 'job')} in {summary.seconds:.1f} s",
        show_header=False,
    )
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("outcome", summary.tally())
    table.add_row("billing", summary.billing())
    per_job = summary.per_job
    table.add_row("requests", f"{summary.requests} ({per_job:.1f} per job)")
    if summary.resumed:
        table.add_row("resumed", summary.resumed_text())
    for n, (key, rid, seconds) in enumerate(summary.slowest):
        table.add_row("slowest" if n == 0 else "", f"{key}  {seconds:.1f} s  {rid or ''}")
    table.add_row("results", summary.results)
    if summary.journal:
        table.add_row("journal", summary.journal)
    if summary.downloads:
        table.add_row("videos", summary.downloads)
    _console().print(table)
