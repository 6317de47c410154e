"""The run loop of ``runcomfy-async run``: submit, follow, stop, and account for every job.

Billing honesty drives its shape. A job that runs on the server is billed,
so it is followed to its outcome whenever the user has not quit: after the
batch deadline (re-attached by request id) and after a first Ctrl-C. A
second Ctrl-C quits at once, but first names every accepted request id not
yet settled. Every job gets exactly one result line, which says whether it
was billed.

Jobs are created as room frees up (a window the size of the in-flight cap),
so a local image is read and encoded only when its job is about to be sent:
memory does not grow with the batch. Each job is submitted under its key, so
with a journal (kept beside ``--output`` by default, or ``--journal``) a run
started again follows (or reports) every job the journal knows instead of
paying for it twice, and skips the jobs whose line the results file already
has (:mod:`._resume`).
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections import Counter
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Final, Literal

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runcomfy_async import (
    AuthenticationError,
    ConnectError,
    DownloadError,
    InsufficientBalanceError,
    Job,
    JournalError,
    JournalRecord,
    Limits,
    Outcome,
    Queued,
    RetryPolicy,
    RunComfy,
    RunComfyError,
    Running,
    SQLiteJournal,
    ValidationError,
)

from ._base import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, plural
from ._batch import Images, JobSpec, Line, check, error_lines
from ._emulator import builtin_emulator
from ._report import Reporter, Summary
from ._results import Record, ResultsFile, error_text, not_sent, open_results, record_of
from ._resume import MAX_NAMED, Prior, named, same_batch, take_up

_FOLLOWED: Final = frozenset({"accepted", "queued", "running", "running_on"})
_ENDED: Final = frozenset({"succeeded", "failed", "cancelled", "timed_out", "error"})

DOWNLOADS_AT_ONCE: Final = 4
DEMO_PROMPTS: Final = (
    "a paper boat drifts down a rain-soaked street, slow dolly shot",
    "the camera pushes in as morning light fills a quiet kitchen",
    "waves roll onto a black sand beach, drone shot at golden hour",
    "a cat stretches on a sunny windowsill, then looks at the camera",
    "leaves swirl around a lamp post in an autumn wind",
    "steam rises from a cup of coffee on a wooden table, macro shot",
    "city lights flicker on as dusk falls, time-lapse",
    "a kite climbs into a clear blue sky over a green hill",
)

CLIENT_RETRY: RetryPolicy | None = None
"""The client's retry policy (None: the library's default); tests shorten it."""

StopReason = Literal["interrupted", "unreachable"]


@attrs.frozen(kw_only=True)
class RunPlan:
    """Everything ``run`` was asked to do, checked for form."""

    lines: list[Line]
    form_errors: list[tuple[int, str]]
    emulated: bool
    token: str | None
    base_url: str | None
    limits: Limits
    timeout: float | None
    output: Path | None
    download: Path | None
    progress_interval: float
    dry_run: bool
    journal: Path | None = None
    resubmit_uncertain: bool = False


async def run(plan: RunPlan, reporter: Reporter) -> int:
    """Check every job, then run the batch; return the exit code."""
    async with AsyncExitStack() as stack:
        token, base_url, sample = plan.token, plan.base_url, None
        if plan.emulated:
            emulator = await stack.enter_async_context(builtin_emulator())
            token, base_url, sample = emulator.token, emulator.base_url, emulator.sample_image
        specs, errors = check(
            plan.lines,
            sample_image=sample,
            demo_prompts=DEMO_PROMPTS if plan.emulated else (),
        )
        errors = plan.form_errors + errors
        if errors:
            for line in error_lines(errors):
                reporter.error(line)
            reporter.warn(f"{plural(len(errors), 'error')}: nothing was submitted")
            return EXIT_USAGE
        if plan.dry_run:
            reporter.warn(
                f"dry run: {plural(len(specs), 'job')} checked; "
                f"{plural(len(specs), 'job')} would be submitted"
                + (" to the built-in emulator" if plan.emulated else f" to {base_url}")
                + ". The API reports no price before a job runs, so no cost is estimated; "
                "nothing was submitted"
            )
            return EXIT_OK
        journal: SQLiteJournal | None = None
        prior = Prior()
        if plan.journal is not None:
            journal = SQLiteJournal(plan.journal)
            try:
                # Held from here on: a second run of the batch is refused before
                # it touches the results file.
                await journal.open()
            except JournalError as exc:
                reporter.error(f"--journal: {exc}")
                reporter.warn("nothing was submitted")
                return EXIT_USAGE
            stack.push_async_callback(journal.close)
            known = {record.key: record for record in await journal.records()}
            problems = same_batch(specs, known)
            if problems:
                for line in error_lines((0, problem) for problem in problems):
                    reporter.error(line)
                reporter.warn(
                    f"the journal {plan.journal} belongs to another batch (or this one "
                    "changed): give this batch its own --output or --journal; nothing was "
                    "submitted"
                )
                return EXIT_USAGE
            if plan.output is not None:
                prior = take_up(
                    plan.output, specs, known, resubmit_uncertain=plan.resubmit_uncertain
                )
            _say_resuming(reporter, plan, specs, known, prior)
        # With a journal the results file is appended to (a resumed run adds
        # what it lacks); without one it is a fresh file.
        with open_results(plan.output, append=journal is not None, written=prior.kept) as results:
            batch = _Batch(
                plan=plan,
                reporter=reporter,
                results=results,
                specs=specs,
                journal=journal,
                resumed=len(prior.kept),
            )
            return await batch.run(token, base_url)
    raise AssertionError("unreachable")  # pragma: no cover - for type checkers


def _say_resuming(
    reporter: Reporter,
    plan: RunPlan,
    specs: list[JobSpec],
    known: dict[str, JournalRecord],
    prior: Prior,
) -> None:
    """Say what an earlier run left: lines kept, jobs the journal knows, repairs."""
    assert plan.journal is not None  # noqa: S101 - only called with a journal
    if prior.cut:
        reporter.warn(
            f"{plan.output}: removed a last line cut off by a crash ({prior.cut} bytes); "
            "its job's line is written again"
        )
    if prior.redone:
        reporter.say(
            f"{plan.output}: {plural(len(prior.redone), 'line')} taken out, to be settled "
            "again: "
            + ", ".join(f"{r.key} ({r.status})" for r in prior.redone[:MAX_NAMED])
            + (" ..." if len(prior.redone) > MAX_NAMED else "")
        )
    todo = [spec for spec in specs if spec.key not in prior.kept]
    states = Counter(known[spec.key].state for spec in todo if spec.key in known)
    if not prior.kept and not states:
        reporter.say(f"journal: {plan.journal} (run the same command again to resume)")
        return
    parts = [f"{len(prior.kept)} of {plural(len(specs), 'job')} already have their line"]
    follow = sum(n for state, n in states.items() if state in _FOLLOWED)
    if follow:
        parts.append(f"{follow} accepted earlier to follow by request id")
    ended = sum(n for state, n in states.items() if state in _ENDED)
    if ended:
        parts.append(f"{ended} ended earlier (their recorded outcome is given)")
    uncertain = states["intent"] + states["uncertain"]
    if uncertain:
        parts.append(
            f"{uncertain} uncertain ("
            + ("sent again: --resubmit-uncertain" if plan.resubmit_uncertain else "not sent again")
            + ")"
        )
    fresh = len(todo) - follow - ended - uncertain
    parts.append(f"{fresh} to send")
    reporter.say(f"resuming from the journal {plan.journal}: " + "; ".join(parts))


@attrs.define
class _Batch:
    """One batch run: its jobs, its stop, its lines."""

    plan: RunPlan
    reporter: Reporter
    results: ResultsFile
    specs: list[JobSpec]
    jobs: dict[Job, JobSpec] = attrs.field(factory=dict)
    stopping: StopReason | None = None
    signals: int = 0
    followed: set[str] = attrs.field(factory=set)
    client: RunComfy | None = None
    base_url: str | None = None
    _all_settled: anyio.Event = attrs.field(factory=anyio.Event)
    _scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    _room: anyio.Semaphore = attrs.field(init=False)
    _group: anyio.abc.TaskGroup | None = None
    _deadline: float | None = None
    journal: SQLiteJournal | None = None
    resumed: int = 0

    def __attrs_post_init__(self) -> None:
        limits = self.plan.limits
        self._room = anyio.Semaphore(limits.max_jobs_in_flight + limits.max_concurrent_requests)

    # -- the whole run -------------------------------------------------------------

    async def run(self, token: str | None, base_url: str | None) -> int:
        reporter, plan = self.reporter, self.plan
        client = RunComfy(
            token,
            base_url=base_url,
            limits=plan.limits,
            retry=CLIENT_RETRY,
            hooks=[reporter.hook],
            journal=self.journal,
            resubmit_uncertain=plan.resubmit_uncertain,
        )
        self.client, self.base_url = client, base_url
        if plan.emulated:
            reporter.say("running against the built-in emulator; nothing is billed")
        reporter.say(
            f"{plural(len(self.specs), 'job')} checked; at most "
            f"{plan.limits.max_jobs_in_flight} in flight, "
            f"{plural(plan.limits.max_concurrent_requests, 'request')} at once"
        )
        if plan.timeout is not None:
            self._deadline = anyio.current_time() + plan.timeout
        reporter.start(len(self.specs) - self.resumed, lambda: client.stats.total_requests)
        if len(self.results.written) >= len(self.specs):
            self._all_settled.set()  # resumed with every line written: nothing to do
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._watch_signals)
                async with client:
                    with self._scope:
                        send, receive = anyio.create_memory_object_stream[Job](math.inf)
                        async with anyio.create_task_group() as group, send, receive:
                            self._group = group
                            group.start_soon(self._feed, client, send)
                            group.start_soon(self._collect, client, receive)
                            group.start_soon(self._tick)
                            await self._all_settled.wait()
                            group.cancel_scope.cancel()
                    # Leaving the client cancels queued jobs remotely and
                    # names those that run on.
                self._write_the_rest(client)
                outer.cancel_scope.cancel()
        finally:
            reporter.stop()
        self._summarise(client)
        if self.signals:
            return EXIT_INTERRUPTED
        statuses = Counter(r.status for r in self.results.written.values())
        return EXIT_OK if statuses["succeeded"] == len(self.specs) else EXIT_FAILED

    # -- sending -------------------------------------------------------------------

    async def _feed(self, client: RunComfy, send: MemoryObjectSendStream[Job]) -> None:
        """Create each job when there is room, so unsent work holds no image data."""
        images = Images()
        for spec in self.specs:
            if spec.key in self.results.written:
                continue  # its line is in the results file already (a resumed run)
            await self._room.acquire()
            if self.stopping is not None:
                self._settle(self._unsent_record(spec))
                continue
            timeout = None
            if self._deadline is not None:
                timeout = self._deadline - anyio.current_time()
                if timeout <= 0:
                    self._settle(
                        not_sent(
                            spec.index,
                            spec.key,
                            "JobTimeoutError: the deadline passed before this job was sent",
                            emulated=self.plan.emulated,
                            status="timed_out",
                        )
                    )
                    continue
            try:
                request = images.request(spec)
            except (OSError, ValidationError) as exc:
                # The file changed since it was checked.
                self._settle(
                    not_sent(
                        spec.index,
                        spec.key,
                        f"{spec.where}: {error_text(exc)}",
                        emulated=self.plan.emulated,
                    )
                )
                continue
            job = client.submit(request, timeout=timeout, key=spec.key)
            self.jobs[job] = spec
            self.reporter.track(job, spec.index, spec.key)
            job.add_done_callback(lambda done: _deliver(send, done))

    def _unsent_record(self, spec: JobSpec) -> Record:
        if self.stopping == "unreachable":
            return not_sent(
                spec.index,
                spec.key,
                "ConnectError: not sent: the API cannot be reached",
                emulated=self.plan.emulated,
            )
        return not_sent(
            spec.index,
            spec.key,
            "JobCancelledError: not sent: the run was interrupted",
            emulated=self.plan.emulated,
            status="cancelled",
        )

    # -- receiving -------------------------------------------------------------------

    async def _collect(self, client: RunComfy, receive: MemoryObjectReceiveStream[Job]) -> None:
        limiter = anyio.CapacityLimiter(DOWNLOADS_AT_ONCE)
        async with anyio.create_task_group() as saving:
            async for job in receive:
                spec = self.jobs[job]
                error = job.exception()
                self._notice_account_errors(error, job)
                if (
                    job.outcome is Outcome.TIMED_OUT
                    and job.billed
                    and job.request_id is not None
                    and self.stopping is None
                ):
                    self._follow(client, job, spec)
                    continue
                if error is None and self.plan.download is not None:
                    saving.start_soon(self._save, client, job, spec, limiter)
                    continue
                self._settle(self._record(job, spec))

    def _notice_account_errors(self, error: RunComfyError | None, job: Job) -> None:
        if isinstance(error, ConnectError) and job.request_id is None:
            where = self.base_url or "its address"
            self.reporter.warn_once(
                "unreachable",
                f"the API at {where} cannot be reached: stopping; nothing more is sent, "
                "and nothing unsent is billed",
            )
            self._stop("unreachable")
        elif isinstance(error, (AuthenticationError, InsufficientBalanceError)):
            self.reporter.warn_once(
                "account", f"the API refused the batch: {error_text(error)}; nothing more is sent"
            )

    def _follow(self, client: RunComfy, job: Job, spec: JobSpec) -> None:
        """Follow a job that ran past the deadline: it is billed, so see it through."""
        assert job.request_id is not None  # noqa: S101 - checked by the caller
        self.reporter.warn_once(
            "deadline",
            "the deadline passed: unsent and queued jobs are dropped (not billed); jobs "
            "already running are billed, and are followed to their end",
        )
        self.reporter.say(f"past the deadline: {spec.key} {job.request_id} runs on; following it")
        followed = client.attach(job.request_id, model_id=job.model_id)
        self.followed.add(job.request_id)
        self.jobs[followed] = spec
        self.reporter.track(followed, spec.index, spec.key)
        followed.add_done_callback(lambda done: self._on_followed(client, done))

    def _on_followed(self, client: RunComfy, job: Job) -> None:
        spec = self.jobs[job]
        if job.exception() is None and self.plan.download is not None and self._group:
            self._group.start_soon(self._save, client, job, spec, anyio.CapacityLimiter(1))
            return
        self._settle(self._record(job, spec))

    async def _save(
        self, client: RunComfy, job: Job, spec: JobSpec, limiter: anyio.CapacityLimiter
    ) -> None:
        """Download a succeeded job's video (output links expire), then write its line."""
        assert self.plan.download is not None  # noqa: S101 - only called with --download
        record = self._record(job, spec)
        try:
            async with limiter:
                target = self.plan.download
                if not spec.key.startswith(("line-", "job-")):
                    target = target / f"{spec.key}.mp4"  # the user named it
                path = await client.download(job.result(), target)
            record = attrs.evolve(record, file=str(path))
        except DownloadError as exc:
            record = attrs.evolve(record, download_error=str(exc))
        finally:
            # Also when cancelled mid-download: the job's line is owed.
            self._settle(record)

    def _record(self, job: Job, spec: JobSpec) -> Record:
        emulated = self.plan.emulated
        if self.stopping == "unreachable" and job.request_id is None and job.outcome == "cancelled":
            return not_sent(
                spec.index,
                spec.key,
                "ConnectError: not sent: the API cannot be reached",
                emulated=emulated,
            )
        return record_of(job, index=spec.index, key=spec.key, emulated=emulated)

    def _settle(self, record: Record) -> None:
        if self.results.write(record):
            self.reporter.finished(record)
            self._room.release()
        if len(self.results.written) >= len(self.specs):
            self._all_settled.set()

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(self.plan.progress_interval)
            self.reporter.progress()

    # -- stopping ------------------------------------------------------------------

    def _stop(self, reason: StopReason) -> None:
        """Stop in order: send nothing more, cancel what is queued, follow what runs."""
        if self.stopping is not None:
            return
        self.stopping = reason
        if self._group is None:
            return
        for job in list(self.jobs):
            if not job.done() and job.request_id not in self.followed:
                self._group.start_soon(self._cancel, job)

    async def _cancel(self, job: Job) -> None:
        with suppress(RunComfyError):
            await job.cancel()

    async def _watch_signals(self) -> None:
        """First Ctrl-C: an orderly stop. Second: quit now. Third: exit at once."""
        try:
            receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
            with receiver as signals:
                async for _ in signals:
                    self.signals += 1
                    if self.signals == 1:
                        self.reporter.warn(
                            "interrupted: nothing more is sent; queued jobs are being cancelled "
                            "(not billed); running jobs are billed and are followed to their "
                            "end. Ctrl-C again to quit now"
                        )
                        self._stop("interrupted")
                    elif self.signals == 2:
                        self._name_unsettled()
                        self._scope.cancel()
                    else:
                        self._exit_now()
        except (NotImplementedError, ValueError, RuntimeError):
            # No signal handlers here (Windows, or not the main thread): Ctrl-C
            # then arrives as a cancellation of the whole run.
            await anyio.sleep_forever()

    def _unsettled(self) -> list[tuple[Job, JobSpec]]:
        written = self.results.written
        return [
            (job, spec)
            for job, spec in self.jobs.items()
            if spec.key not in written and not job.done() and job.request_id is not None
        ]

    def _name_unsettled(self) -> None:
        """Quitting: name every accepted job not settled, before anything else can fail."""
        left = self._unsettled()
        self.reporter.warn(
            f"quitting: {plural(len(left), 'accepted job')} not settled"
            + (
                " (queued ones are being cancelled; running ones run on and are billed):"
                if left
                else ""
            )
        )
        for job, spec in left:
            if isinstance(job.state, Running):
                word = "running (billed)"
            elif isinstance(job.state, Queued):
                word = "queued"
            else:
                word = "accepted, not seen since (it may be running, and billed)"
            self.reporter.warn(f"  {spec.key}  {job.request_id}  {word}")

    def _exit_now(self) -> None:
        """Write what is known and exit without waiting for anything (a third Ctrl-C)."""
        for job, spec in self._unsettled():
            word = "running" if isinstance(job.state, Running) else "queued"
            self._settle(
                record_of(
                    job, index=spec.index, key=spec.key, emulated=self.plan.emulated, status=word
                )
            )
        self.reporter.stop()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    def _write_the_rest(self, client: RunComfy) -> None:
        """After the close: a line for every job not yet written, as it was left."""
        running_on = {id(job) for job in client.running_on}
        for job, spec in list(self.jobs.items()):
            if spec.key in self.results.written:
                continue
            if id(job) in running_on or job.outcome is Outcome.RUNNING_ON or not job.done():
                status = "running" if id(job) in running_on or job.billed else "queued"
                self._settle(
                    record_of(
                        job,
                        index=spec.index,
                        key=spec.key,
                        emulated=self.plan.emulated,
                        status=status,
                        error=f"left on the server when the run quit: collect it with "
                        f"'runcomfy-async wait {job.request_id}'",
                    )
                )
            else:
                self._settle(self._record(job, spec))
        for spec in self.specs:
            if spec.key not in self.results.written:
                self._settle(self._unsent_record(spec))

    def _summarise(self, client: RunComfy) -> None:
        records = list(self.results.written.values())
        billed_words = Counter(
            {True: "yes", False: "no", None: "unknown"}[r.billed] for r in records
        )
        self.reporter.summary(
            Summary(
                statuses=Counter(r.status for r in records),
                billed=billed_words,
                cost=self.results.cost,
                emulated=self.plan.emulated,
                jobs=len(self.specs),
                requests=client.stats.total_requests,
                seconds=self.reporter.elapsed(),
                slowest=self.reporter.slowest(),
                results=str(self.plan.output) if self.plan.output else "stdout",
                downloads=str(self.plan.download) if self.plan.download else None,
                resumed=self.resumed,
                journal=str(self.plan.journal) if self.plan.journal else None,
            )
        )
        self._say_uncertain(records)
        left = [r for r in records if r.status in {"running", "queued"}]
        if left:
            ids = " ".join(str(r.request_id) for r in left)
            self.reporter.warn(
                f"{plural(len(left), 'job')} left on the server; collect them with: "
                f"runcomfy-async wait {ids}"
            )

    def _say_uncertain(self, records: list[Record]) -> None:
        """Name every uncertain job (this run's or an earlier one's), and what to do."""
        uncertain = sorted((r for r in records if r.status == "uncertain"), key=lambda r: r.index)
        if not uncertain:
            return
        if self.journal is None:
            advice = (
                "Check RunComfy's dashboard before sending them again: a job that was "
                "created runs and is billed"
            )
        else:
            advice = (
                "Check RunComfy's dashboard, then run the same command with "
                "--resubmit-uncertain to send them again (each may then be paid twice)"
            )
        self.reporter.warn(
            f"{plural(len(uncertain), 'job')} uncertain: each one's submit was sent, but its "
            "answer was lost (the run stopped, or the connection dropped), so a job may "
            f"exist and be billed; not sent again. {advice}:"
        )
        for line in named(r.key for r in uncertain):
            self.reporter.warn(line)


def _deliver(send: MemoryObjectSendStream[Job], job: Job) -> None:
    # A job the client's close settles arrives after the collector has
    # stopped; its line is written from the close's side instead.
    with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
        send.send_nowait(job)
