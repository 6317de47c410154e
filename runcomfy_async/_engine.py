"""The engine: submits jobs as limits allow and polls them until they end.

One dispatcher task decides *what* to send next: remote cancels first (they
stop billing), then polls that are due and submits (only while fewer than
``max_jobs_in_flight`` jobs are in flight), with submits given a fair share
when both wait, so a rate-bound batch keeps growing. It hands work only to
idle workers of a fixed pool of ``max_concurrent_requests``, all ready work
in one pass, so priorities are decided late and requests due together leave
together. Polls wait in a heap keyed by due time, deadlines in another, and
the dispatcher sleeps on one clock timer: ten thousand jobs cost two heaps,
not ten thousand timers. Re-plans (pulling polls earlier after the policy
learned something) are done by the dispatcher itself, a slice at a time, so
no task is ever started outside the client's task group.

The journal is awaited at the submit seam: the intent before the POST, the
request id the moment it is accepted (shielded, with the acceptance), and
every state change and ending after.

Closing (:meth:`Engine.close`) drops unsent work at once, waits a bounded
time for submits already on the wire, cancels accepted jobs that may still
be queued, fetches the outcome of those that finished meanwhile, and
resolves every job; it never starts new work and never raises.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel

from ._api import API
from ._clock import Clock, TimerHandle, cancel_at
from ._errors import (
    APIError,
    APIUnreachableError,
    AuthenticationError,
    ClientClosedError,
    ConnectError,
    InsufficientBalanceError,
    JobCancelledError,
    JobFailedError,
    JobRunningOnError,
    JobTimeoutError,
    JournalError,
    ProtocolError,
    RateLimitedError,
    RunComfyError,
    ServerError,
    SubmissionUncertainError,
    TransportError,
)
from ._events import JobFinished, JobStatusChanged, JobSubmitted, Monitor, logger
from ._job import CancelReason, Job, JobRecord, Outcome, outcome_of, settle
from ._journal import Journal, NullJournal
from ._journal_writer import JournalWriter
from ._models import (
    Accepted,
    Cancelled,
    CancelOutcome,
    Completed,
    Failed,
    JobResult,
    JobStatus,
    Queued,
    Running,
    Succeeded,
)
from ._polling import Phase, PollPolicy, PollState
from ._requests import Request

REPLAN_SLICE: Final = 256
"""Jobs re-planned between two yields to the event loop."""

MAX_POLL_FAILURES: Final = 4
"""Polls in a row that may fail (after their own retries) before a job gives up."""

SUBMIT_SHARE: Final = 0.25
"""The share of hand-outs submits get when polls and submits both wait."""


class _Work(Enum):
    SUBMIT = "submit"
    POLL = "poll"
    CANCEL = "cancel"


_ACCOUNT_ERRORS = (AuthenticationError, InsufficientBalanceError)
_TRANSIENT = (ServerError, TransportError, RateLimitedError)

_NOT_SENT: Final = {
    CancelReason.TIMEOUT: "the deadline passed before this job was sent; nothing was billed",
    CancelReason.CLOSED: "the client closed before this job was sent; nothing was billed",
    CancelReason.REQUESTED: "cancelled before it was sent; nothing was billed",
    CancelReason.ABANDONED: "cancelled before it was sent; nothing was billed",
}


def _not_sent_error(reason: CancelReason) -> RunComfyError:
    message = _NOT_SENT[reason]
    return (
        JobTimeoutError(message) if reason is CancelReason.TIMEOUT else JobCancelledError(message)
    )


def _transient(error: RunComfyError) -> bool:
    if isinstance(error, ProtocolError):
        return error.retryable
    return isinstance(error, _TRANSIENT)


class Engine:
    """Runs every job of one client: submission queue, poll heap, deadlines."""

    def __init__(
        self,
        api: API,
        monitor: Monitor,
        *,
        policy: PollPolicy,
        clock: Clock,
        journal: Journal | None = None,
        max_jobs_in_flight: int,
        workers: int,
        cancel_timeout: float,
        retry_budget: float | None,
        resubmit_uncertain: bool = False,
    ) -> None:
        self._api = api
        self._monitor = monitor
        self._policy = policy
        self._clock = clock
        self._journal: Journal = journal if journal is not None else NullJournal()
        self._journaled = journal is not None and not isinstance(journal, NullJournal)
        self._max_in_flight = max_jobs_in_flight
        self._workers = workers
        self._cancel_timeout = cancel_timeout
        self._retry_budget = retry_budget
        self._resubmit_uncertain = resubmit_uncertain
        self._handoff: asyncio.Queue[tuple[_Work, JobRecord]] | None = None
        self._pending: deque[JobRecord] = deque()
        self._cancels: deque[JobRecord] = deque()
        self._polls: list[tuple[float, int, int, JobRecord]] = []
        self._deadlines: list[tuple[float, int, JobRecord]] = []
        self._replans: deque[tuple[list[JobRecord], int]] = deque()
        self._seq = itertools.count()
        self._live: set[JobRecord] = set()
        self._submitting: set[JobRecord] = set()
        self._in_flight = 0
        self._wake = anyio.Event()
        self._sleep_until = -math.inf
        self._idle = 0  # workers waiting for work
        self._submit_credit = 0.0
        # Until one submit is answered at all, submits go one at a time: a bad
        # token, an empty balance or an unreachable host then costs one
        # request, not a burst. Any answer (or uncertainty) ends the probe.
        self._probing = True
        self._waiting_for_worker = False
        self._accepting = False
        self._closing = False
        self._stop_error: RunComfyError | None = None
        self._submits_idle = anyio.Event()
        self._submits_idle.set()
        self._queued_models: set[str | None] = set()  # models seen queued: ask /status first
        # State changes and endings are written by one writer task, in order;
        # the intent and the acceptance are awaited where they happen.
        self._writer = JournalWriter(self._journal, self._journal_failed)
        self._journal_error: BaseException | None = None

    def __repr__(self) -> str:
        return (
            f"<Engine pending={len(self._pending)} in_flight={self._in_flight} "
            f"live={len(self._live)} polls_booked={len(self._polls)}>"
        )

    @property
    def policy(self) -> PollPolicy:
        """The polling policy in use."""
        return self._policy

    @property
    def in_flight(self) -> int:
        """Jobs sent (or being sent) and not yet finished."""
        return self._in_flight

    @property
    def live_jobs(self) -> int:
        """Jobs not finished yet, sent or not."""
        return len(self._live)

    # -- lifecycle ---------------------------------------------------------------

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start the dispatcher and the workers in *task_group*."""
        # A plain asyncio queue: anyio's memory streams cost several times as
        # much per item, and this hand-off happens once per request.
        self._handoff = asyncio.Queue()
        self._accepting = True
        task_group.start_soon(self._dispatch, self._handoff, name="runcomfy dispatcher")
        for index in range(self._workers):
            task_group.start_soon(self._work, self._handoff, name=f"runcomfy worker {index}")
        if self._journaled:
            task_group.start_soon(self._writer.run, name="runcomfy journal")

    def stop_accepting(self) -> None:
        """Refuse new jobs, and drop every job not yet accepted, at once.

        A submit waiting for a send slot or backing off between tries is
        dropped too (its earlier tries were provably not accepted); only a
        submit whose body is on the wire is left to finish.
        """
        self._accepting = False
        self._closing = True
        while self._pending:
            record = self._pending.popleft()
            self._end_unsent(record, CancelReason.CLOSED)
        for record in list(self._submitting):
            if record.scope is not None:
                record.cancel_reason = CancelReason.CLOSED
                if not record.on_wire:
                    record.scope.cancel()
        self._notify()

    async def close(self) -> list[Job]:
        """End every unfinished job; return those that run on (and are billed).

        Bounded by ``cancel_timeout`` for each of its waits (submits on the
        wire; remote cancels and last looks), shielded by the caller. Never
        raises for a job that finished meanwhile, and leaves no job unresolved.
        """
        self.stop_accepting()
        await self._settle_submits()
        running_on = await self._cancel_accepted()
        for record in running_on:
            if not record.done:
                self._end(
                    record,
                    error=JobRunningOnError(
                        "the client closed while this job was running or its state was "
                        "unknown; it runs on and is billed: re-attach it by its request id",
                    ),
                )
        for record in list(self._live):  # nothing may stay unresolved
            self._end(record, error=JobCancelledError("the client closed"))
        ids = [str(record.request_id) for record in running_on]
        if ids:
            logger.warning(
                "closed with %d job(s) still running on the server (billed): %s",
                len(ids),
                ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else ""),
            )
        await self._writer.flush()
        return [record.handle for record in running_on]

    async def _settle_submits(self) -> None:
        """Wait, bounded, for submits on the wire; their answers are billed jobs."""
        clock = self._clock
        with cancel_at(clock, clock.now() + self._cancel_timeout):
            await self._submits_idle.wait()
        self._api.wire.cut()  # stop waiting for any answer still out
        with cancel_at(clock, clock.now() + self._cancel_timeout / 2):
            await self._submits_idle.wait()  # let the cut ones record themselves
        for record in list(self._submitting):
            self._end(
                record,
                error=SubmissionUncertainError(
                    "the client closed while this submit was on the wire; a billed "
                    "job may exist (RunComfy has no idempotency key)",
                    model_id=record.model_id or "unknown",
                ),
            )

    async def _cancel_accepted(self) -> list[JobRecord]:
        """Cancel accepted jobs that may be queued; return those that run on."""
        running_on: list[JobRecord] = []
        to_cancel: list[JobRecord] = []
        for record in list(self._live):
            if record.request_id is None:
                self._end_unsent(record, CancelReason.CLOSED)
            elif isinstance(record.state, Running):
                running_on.append(record)
            else:
                to_cancel.append(record)
        clock = self._clock
        with cancel_at(clock, clock.now() + self._cancel_timeout):
            async with anyio.create_task_group() as group:
                for record in to_cancel:
                    group.start_soon(self._cancel_on_close, record)
        running_on.extend(record for record in to_cancel if not record.done)
        return running_on

    @property
    def journal_error(self) -> BaseException | None:
        """The journal's failure, if it failed (the client raises it at close)."""
        return self._journal_error

    def _journal_failed(self, error: BaseException) -> None:
        self._journal_error = error
        self._fail_pending(JournalError(f"the journal failed: {error!r}"))

    def _fail_pending(self, error: RunComfyError) -> None:
        if self._stop_error is None:
            self._stop_error = error
        while self._pending:
            self._end(self._pending.popleft(), error=self._copy_stop_error())

    async def _cancel_on_close(self, record: JobRecord) -> None:
        outcome = await self._remote_cancel(record)
        if outcome is None or record.done:
            return
        if outcome.cancelled:
            self._end(record, error=JobCancelledError("cancelled remotely when the client closed"))
            return
        # Not cancellable: it runs, or it finished before the cancel arrived.
        # One look at the result tells which, and collects a finished outcome.
        assert record.request_id is not None  # noqa: S101
        try:
            state = await self._api.result(
                record.request_id, deadline=self._clock.now() + self._cancel_timeout
            )
        except RunComfyError as exc:
            logger.info("last look at %s failed: %s", record.request_id, exc)
            return
        self._observe(record, state, learn=False)

    # -- intake ------------------------------------------------------------------

    def new_job(
        self,
        request: object,
        *,
        key: str | None = None,
        deadline: float | None = None,
    ) -> Job:
        """Create and queue a job for *request*."""
        self._check_accepting()
        record = JobRecord(request, key=key, deadline=deadline)
        job = Job(record, self)
        self._admit(record)
        if self._stop_error is not None:
            self._end(record, error=self._copy_stop_error())
            return job
        self._pending.append(record)
        self._notify()
        return job

    def attach(
        self,
        request_id: str,
        *,
        model_id: str | None = None,
        key: str | None = None,
        deadline: float | None = None,
        request: object = None,
    ) -> Job:
        """Track an already submitted job (by its request id)."""
        self._check_accepting()
        record = JobRecord(
            request, key=key, request_id=request_id, model_id=model_id, deadline=deadline
        )
        job = Job(record, self)
        self._admit(record)
        self._in_flight += 1
        record.counted = True
        now = self._clock.now()
        record.track = PollState(
            key=record.model_id or "unknown", scale=1.0, submitted_at=now, attached=True
        )
        # Its age is unknown: ask at once rather than guess.
        self._book_at(record, now)
        self._notify()
        return job

    def settled(self, *, key: str | None, model_id: str | None, error: RunComfyError) -> Job:
        """Make a job that is already over (known from the journal)."""
        record = JobRecord(None, key=key, model_id=model_id)
        job = Job(record, self)
        record.sent = True
        self._live.add(record)
        self._end(record, error=error, journal=False)
        return job

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ClientClosedError("the client is not open: use it inside 'async with'")

    def _admit(self, record: JobRecord) -> None:
        self._live.add(record)
        if record.deadline is not None:
            heapq.heappush(self._deadlines, (record.deadline, next(self._seq), record))

    def abandon(self, record: JobRecord) -> None:
        """Cancel a job in the background: the task awaiting it was cancelled."""
        self._request_cancel(record, CancelReason.ABANDONED)

    async def cancel(self, record: JobRecord) -> CancelOutcome | None:
        """Cancel a job now (see :meth:`Job.cancel`)."""
        if record.done:
            return record.cancel_outcome
        if record.request_id is None:
            if record not in self._submitting:
                self._end_unsent(record, CancelReason.REQUESTED)
                return None
            if _droppable(record):
                # Waiting for a slot or backing off: not accepted, drop it now.
                record.cancel_reason = CancelReason.REQUESTED
                record.scope.cancel()  # type: ignore[union-attr]
                return None
            record.cancel_reason = CancelReason.REQUESTED
            # On the wire: cancel as soon as its id is known.
            if record.waiters is None:
                record.waiters = anyio.Event()
            await record.waiters.wait()
            if _ended(record) or record.request_id is None:
                return record.cancel_outcome
        outcome = await self._remote_cancel(record)
        if outcome is not None and outcome.cancelled and not record.done:
            self._end(record, error=JobCancelledError("cancelled remotely"))
        return outcome

    def _request_cancel(self, record: JobRecord, reason: CancelReason) -> None:
        if record.done:
            return
        if record.request_id is None:
            if record in self._submitting:
                record.cancel_reason = reason
                if _droppable(record):
                    record.scope.cancel()  # type: ignore[union-attr]  # not on the wire
            else:
                self._end_unsent(record, reason)
            return
        if reason is CancelReason.TIMEOUT and isinstance(record.state, Running):
            # A running job cannot be cancelled; do not spend a request on it.
            self._end(
                record,
                error=JobTimeoutError(
                    "the deadline passed while the job was running; a running job cannot "
                    "be cancelled, so it runs on and is billed"
                ),
            )
            return
        record.cancel_reason = reason
        record.poll_seq += 1  # drop its booked poll: the cancel decides what comes next
        self._cancels.append(record)
        self._notify()

    # -- dispatching -------------------------------------------------------------

    def _notify(self) -> None:
        self._wake.set()

    async def _dispatch(self, handoff: asyncio.Queue[tuple[_Work, JobRecord]]) -> None:
        clock = self._clock
        while True:
            now = clock.now()
            busy = False
            while True:
                if self._idle <= handoff.qsize():
                    # Every idle worker has work; wait for one to free up if
                    # more is ready (it will wake us), else for the next due.
                    busy = self._ready(now)
                    break
                item = self._next(now)
                if item is None:
                    break
                handoff.put_nowait(item)
            if self._replans:
                self._replan_slice(now)
                await anyio.lowlevel.checkpoint()
                continue
            if self._wake.is_set():
                self._wake = anyio.Event()
                continue
            self._waiting_for_worker = busy
            self._sleep_until = math.inf if busy else self._next_due()
            timer: TimerHandle | None = None
            if math.isfinite(self._sleep_until):
                timer = clock.call_at(self._sleep_until, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()
            self._sleep_until = -math.inf  # awake: bookings need not wake it
            self._waiting_for_worker = False

    def _ready(self, now: float) -> bool:
        """Say whether some work could be handed out now (stale entries count)."""
        return bool(
            self._cancels
            or (self._polls and self._polls[0][0] <= now)
            or (self._deadlines and self._deadlines[0][0] <= now)
            or self._can_submit()
        )

    def _can_submit(self) -> bool:
        return (
            self._accepting
            and bool(self._pending)
            and self._in_flight < self._max_in_flight
            and not (self._probing and self._submitting)
        )

    def _next_due(self) -> float:
        due = self._polls[0][0] if self._polls else math.inf
        if self._deadlines:
            due = min(due, self._deadlines[0][0])
        return due

    def _next(self, now: float) -> tuple[_Work, JobRecord] | None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, record = heapq.heappop(self._deadlines)
            self._request_cancel(record, CancelReason.TIMEOUT)
        while self._cancels:
            record = self._cancels.popleft()
            if not record.done:
                return (_Work.CANCEL, record)
        poll_ready = bool(self._polls) and self._polls[0][0] <= now
        if self._can_submit() and (not poll_ready or self._submit_credit >= 1.0):
            self._submit_credit = max(0.0, self._submit_credit - 1.0)
            submit = self._next_submit()
            if submit is not None:
                return submit
        while self._polls and self._polls[0][0] <= now:
            _, _, seq, record = heapq.heappop(self._polls)
            if seq == record.poll_seq and not record.done:
                if self._can_submit():
                    # Submits wait behind this poll: they earn their share.
                    self._submit_credit += SUBMIT_SHARE / (1.0 - SUBMIT_SHARE)
                return (_Work.POLL, record)
        if self._can_submit():
            return self._next_submit()
        return None

    def _next_submit(self) -> tuple[_Work, JobRecord] | None:
        while self._pending:
            record = self._pending.popleft()
            if record.done:
                continue
            self._in_flight += 1
            record.counted = True
            self._submitting.add(record)
            self._submits_idle = anyio.Event()
            return (_Work.SUBMIT, record)
        return None

    def _book_poll(self, record: JobRecord, now: float) -> None:
        track = record.track
        assert track is not None  # noqa: S101
        self._book_at(record, now + self._policy.next_delay(track, now))

    def _book_at(self, record: JobRecord, due: float) -> None:
        record.poll_seq += 1
        record.due = due
        heapq.heappush(self._polls, (due, next(self._seq), record.poll_seq, record))
        if due < self._sleep_until:
            self._notify()  # the dispatcher sleeps past this poll: wake it

    def _replan(self, key: str) -> None:
        """Pull polls earlier where the policy just learned they are due sooner."""
        if self._closing:
            return
        records = [r for r in self._live if r.track is not None and r.track.key == key]
        self._replans.append((records, 0))
        self._notify()

    def _replan_slice(self, now: float) -> None:
        # Ten thousand jobs take tens of milliseconds to re-plan: do it a
        # slice at a time, so the event loop never stalls on it.
        records, start = self._replans.popleft()
        for record in records[start : start + REPLAN_SLICE]:
            track = record.track
            if track is None or record.done or record.cancel_reason is not None:
                continue
            due = now + self._policy.next_delay(track, now)
            if due < record.due:
                self._book_at(record, due)
        if start + REPLAN_SLICE < len(records):
            self._replans.appendleft((records, start + REPLAN_SLICE))

    # -- working -----------------------------------------------------------------

    async def _work(self, handoff: asyncio.Queue[tuple[_Work, JobRecord]]) -> None:
        while True:
            self._idle += 1
            if self._waiting_for_worker:
                self._waiting_for_worker = False
                self._notify()
            try:
                kind, record = await handoff.get()
            finally:
                self._idle -= 1
            try:
                if kind is _Work.SUBMIT:
                    await self._submit(record)
                elif kind is _Work.POLL:
                    await self._poll(record)
                else:
                    await self._cancel_work(record)
            except Exception as exc:  # noqa: BLE001 - a bug must cost one job, not a worker
                logger.exception("internal error on %r", record.handle)
                if not record.done:
                    self._end(record, error=RunComfyError(f"internal error: {exc!r}"))

    async def _submit(self, record: JobRecord) -> None:
        try:
            await self._submit_one(record)
        finally:
            self._submitting.discard(record)
            if not self._submitting:
                self._submits_idle.set()
            self._notify()

    async def _submit_one(self, record: JobRecord) -> None:
        error: RunComfyError | None = None
        submission = None
        with anyio.CancelScope() as scope:
            # Cancellable until the body is on the wire (the API shields that
            # part): a drop now costs nothing and bills nothing.
            record.scope = scope
            if record.cancel_reason is not None:
                scope.cancel()
            if self._journaled and record.key is not None and await self._known(record):
                record.scope = None
                return
            try:
                submission = await self._api.submit(
                    record.request,
                    on_retry=self._retry_of(record),
                    on_wire=lambda sending: _on_wire(record, sending),
                    before_send=(
                        functools.partial(self._write_intent, record)
                        if self._journaled and record.key is not None
                        else None
                    ),
                )
            except RunComfyError as exc:
                error = exc
            finally:
                record.scope = None
        if submission is None and error is None:
            # Dropped before it was accepted: by a cancel, a deadline or close.
            # (If an intent was written, its ending is too: not accepted.)
            reason = record.cancel_reason or CancelReason.CLOSED
            self._end_unsent(record, reason, journal=True)
            return
        if error is not None:
            self._submit_failed(record, error)
            return
        assert submission is not None  # noqa: S101
        self._probing = False
        now = self._clock.now()
        record.request_id = submission.request_id
        record.state = Accepted()
        record.track = PollState(
            key=record.model_id or "unknown",
            scale=float(getattr(record.request, "run_time_scale", 1.0)),
            submitted_at=now,
        )
        if record.waiters is not None:
            record.waiters.set()
        if self._journaled and record.key is not None:
            with anyio.CancelScope(shield=True):
                await self._journal.accepted(record.key, submission.request_id)
        self._monitor.emit(JobSubmitted(record.handle))
        logger.debug("submitted %s as %s", record.model_id, record.request_id)
        if record.cancel_reason is not None:
            reason, record.cancel_reason = record.cancel_reason, None
            self._request_cancel(record, reason)
            return
        self._book_poll(record, now)

    async def _write_intent(self, record: JobRecord) -> None:
        """Write the intent, right before the POST leaves (see ``API.submit``).

        Raises:
            JournalError: The store failed: this submit is not sent, nor any other.

        """
        assert record.key is not None  # noqa: S101
        try:
            await self._journal.intent(
                record.key, record.model_id or "", _fingerprint(record.request)
            )
        except Exception as exc:
            logger.exception("the journal failed; no more jobs are sent")
            self._journal_error = exc
            error = JournalError(f"the journal failed before the submit: {exc!r}")
            self._fail_pending(error)
            raise error from exc

    async def _known(self, record: JobRecord) -> bool:
        """Settle or follow a job the journal already knows; say if it did.

        A key with a request id is followed (or its recorded ending given
        back); one whose submit's outcome is unknown is not sent again unless
        ``resubmit_uncertain``; one that was never accepted, or was cancelled
        before it ran (never billed), is sent as new.
        """
        assert record.key is not None  # noqa: S101
        known = await self._journal.lookup(record.key)
        if known is None or known.state == Outcome.CANCELLED:
            return False
        if known.request_id is None:
            if known.state not in _UNCERTAIN_STATES or self._resubmit_uncertain:
                return False
            self._end(
                record,
                error=SubmissionUncertainError(
                    "an earlier run's submit of this job may have created a billed job; it "
                    "was not sent again (pass resubmit_uncertain=True to send it anyway)",
                    model_id=record.model_id or "unknown",
                ),
                journal=False,
            )
            return True
        record.request_id = known.request_id
        record.sent = True
        if known.state == Outcome.SUCCEEDED and known.result is not None:
            record.ran = True
            self._end(record, result=JobResult.from_json(known.result), journal=False)
            return True
        if known.state in _SERVER_ENDINGS:
            record.ran = known.state == Outcome.FAILED
            ending = _ending_from_journal(known.state, known.error)
            self._end(record, error=ending, journal=False)
            return True
        # Accepted and not over, as far as the journal knows: follow it.
        record.state = Accepted()
        record.track = PollState(
            key=record.model_id or "unknown",
            scale=float(getattr(record.request, "run_time_scale", 1.0)),
            submitted_at=self._clock.now(),
            attached=True,
        )
        self._book_at(record, self._clock.now())
        return True

    def _submit_failed(self, record: JobRecord, error: RunComfyError) -> None:
        if isinstance(error, _ACCOUNT_ERRORS) or (
            isinstance(error, ConnectError) and not isinstance(error, APIUnreachableError)
        ):
            # Every other submit would fail the same way: send no more.
            if isinstance(error, ConnectError):
                error = APIUnreachableError(
                    f"the API cannot be reached ({error.message}); no job was sent"
                )
            self._fail_pending(error)
        else:
            self._probing = False  # the server answered (or may have): probing is over
        if isinstance(error, SubmissionUncertainError):
            record.sent = True
        self._end(record, error=error)
        if record.waiters is not None:
            record.waiters.set()

    def _copy_stop_error(self) -> RunComfyError:
        cause = self._stop_error
        assert cause is not None  # noqa: S101
        return type(cause)(
            f"not sent, because an earlier submit failed: {cause.message}",
            status=cause.status,
            error_code=cause.error_code,
        )

    def _retry_of(self, record: JobRecord) -> Callable[[], None]:
        def count() -> None:
            record.retries += 1

        return count

    async def _poll(self, record: JobRecord) -> None:
        assert record.request_id is not None  # noqa: S101
        assert record.track is not None  # noqa: S101
        now = self._clock.now()
        if record.failing_since is None:
            record.failing_since = now
        budget = self._retry_budget
        deadline = None if budget is None else record.failing_since + budget
        try:
            state = await self._fetch(record, record.request_id, record.track.phase, deadline)
        except APIError as exc:
            record.polls += 1
            if not _transient(exc):
                self._end(record, error=exc)
                return
            failure: RunComfyError = exc
        except TransportError as exc:
            record.polls += 1
            failure = exc
        else:
            record.polls += 1
            record.poll_failures = 0
            record.failing_since = None
            self._observe(record, state)
            return
        record.poll_failures += 1
        now = self._clock.now()
        if record.poll_failures >= MAX_POLL_FAILURES or (deadline is not None and now >= deadline):
            self._end(record, error=failure)
            return
        # Try again, but never later than the end of the budget: the last
        # try then falls on it, and the job's error comes on time.
        delay = self._policy.next_delay(record.track, now)
        self._book_at(record, now + delay if deadline is None else min(now + delay, deadline))

    async def _fetch(
        self, record: JobRecord, request_id: str, phase: Phase, deadline: float | None
    ) -> Queued | Running | Succeeded | Failed | Cancelled:
        """Poll the endpoint that tells the most for one request.

        Only ``/status`` reports a queue position, so a job not yet seen
        running is polled there; a running one is polled on ``/result``,
        which answers with the output itself once the job is done (no extra
        request at the end). A finish seen on ``/status`` costs one more
        request, for the outcome. A first poll goes to ``/result`` as long as
        no job of its model has been seen queued in this session.
        """
        on_retry = self._retry_of(record)
        if phase is Phase.RUNNING or (
            phase is Phase.UNKNOWN and record.model_id not in self._queued_models
        ):
            # Running, or likely so (nothing of this model was seen queued in
            # this session): /result says so too, and ends it in one request.
            return await self._api.result(request_id, on_retry=on_retry, deadline=deadline)
        state = await self._api.status(request_id, on_retry=on_retry, deadline=deadline)
        if isinstance(state, (Completed, Failed)):
            record.polls += 1
            return await self._api.result(request_id, on_retry=on_retry, deadline=deadline)
        return state

    def _observe(
        self,
        record: JobRecord,
        state: Queued | Running | Succeeded | Failed | Cancelled,
        *,
        learn: bool = True,
    ) -> None:
        terminal = isinstance(state, (Succeeded, Failed, Cancelled))
        if record.done or (record.cancel_reason is not None and not terminal):
            return  # a cancel is under way; it decides what comes next
        now = self._clock.now()
        track = record.track
        assert track is not None  # noqa: S101
        match state:
            case Succeeded(result=result):
                record.ran = True
                self._set_state(record, state)
                replan = learn and self._policy.finished(track, now, result.run_seconds)
                self._end(record, result=result)
                if replan:
                    self._replan(track.key)
            case Failed(message=message, error=error):
                record.ran = True
                self._set_state(record, state)
                self._end(record, error=JobFailedError(message, error=error))
            case Cancelled():
                self._set_state(record, state)
                self._end(record, error=JobCancelledError("the job was cancelled on the server"))
            case Queued(position=position):
                self._queued_models.add(record.model_id)
                track.see(Phase.QUEUED, position, now)
                self._policy.observe(track, now)
                self._set_state(record, state)
                if not self._closing:
                    self._book_poll(record, now)
            case Running():
                record.ran = True
                track.see(Phase.RUNNING, None, now)
                self._policy.observe(track, now)
                self._set_state(record, state)
                if not self._closing:
                    self._book_poll(record, now)

    def _set_state(self, record: JobRecord, new: JobStatus) -> None:
        old, record.state = record.state, new
        if new != old:
            self._monitor.emit(JobStatusChanged(record.handle, old, new))
            if self._journaled and record.key is not None and isinstance(new, (Queued, Running)):
                word = "queued" if isinstance(new, Queued) else "running"
                self._writer.later("state", record.key, word)

    async def _cancel_work(self, record: JobRecord) -> None:
        if record.done:
            return
        reason = record.cancel_reason or CancelReason.REQUESTED
        outcome = await self._remote_cancel(record)
        if _ended(record):
            return
        if outcome is not None and outcome.cancelled:
            error: RunComfyError = (
                JobTimeoutError(
                    "the deadline passed; the job was cancelled while queued (not billed)",
                    cancel=outcome,
                )
                if reason is CancelReason.TIMEOUT
                else JobCancelledError("cancelled remotely, as its waiter stopped waiting")
            )
            self._end(record, error=error)
            return
        if reason is CancelReason.TIMEOUT:
            self._end(
                record,
                error=JobTimeoutError(
                    "the deadline passed and the job could not be cancelled; it runs on and "
                    "is billed",
                    cancel=outcome,
                ),
            )
            if outcome is not None:
                record.ran = True
            return
        # Abandoned but running: it is billed anyway, so see it through and
        # keep its result on the job rather than lose it.
        logger.warning(
            "job %s could not be cancelled (already running); it is billed and still tracked",
            record.request_id,
        )
        record.cancel_reason = None
        self._book_poll(record, self._clock.now())

    async def _remote_cancel(self, record: JobRecord) -> CancelOutcome | None:
        assert record.request_id is not None  # noqa: S101
        outcome: CancelOutcome | None = None
        clock = self._clock
        with cancel_at(clock, clock.now() + self._cancel_timeout):
            try:
                outcome = await self._api.cancel(
                    record.request_id,
                    on_retry=self._retry_of(record),
                    deadline=clock.now() + self._cancel_timeout,
                )
            except RunComfyError as exc:
                logger.warning("remote cancel of %s failed: %s", record.request_id, exc)
        if outcome is not None:
            record.cancel_outcome = outcome
            if not outcome.cancelled:
                # Not cancellable: it runs or has finished, so it is billed.
                record.ran = True
                logger.info(
                    "job %s is not cancellable (status %s)", record.request_id, outcome.status
                )
        return outcome

    # -- endings -----------------------------------------------------------------

    def _end_unsent(
        self, record: JobRecord, reason: CancelReason, *, journal: bool = False
    ) -> None:
        self._end(record, error=_not_sent_error(reason), journal=journal)

    def _end(
        self,
        record: JobRecord,
        *,
        result: JobResult | None = None,
        error: RunComfyError | None = None,
        journal: bool = True,
    ) -> None:
        if record.done:
            return
        self._live.discard(record)
        record.poll_seq += 1
        if record.counted:
            self._in_flight -= 1
            record.counted = False
        outcome = outcome_of(error)
        self._monitor.jobs[outcome.value] += 1
        settle(record, result, error)
        if record.waiters is not None:
            record.waiters.set()
        if journal and self._journaled and record.key is not None and record.sent:
            self._writer.later(
                "finished",
                record.key,
                outcome.value,
                result=None if result is None else result.to_json(),
                error=None if error is None else str(error),
            )
        self._monitor.emit(JobFinished(record.handle))
        self._notify()


_UNCERTAIN_STATES: Final = frozenset({"intent", Outcome.UNCERTAIN})
# Our own outcome words, as the journal keeps them (never the server's words).
_SERVER_ENDINGS: Final = frozenset({Outcome.SUCCEEDED, Outcome.FAILED})


def _ending_from_journal(state: str, message: str | None) -> RunComfyError:
    return JobFailedError(f"(from the journal) {message or state}")


def _on_wire(record: JobRecord, sending: bool) -> None:
    # While on the wire the submit's answer is awaited (shielded): it cannot be
    # dropped then, only cancelled remotely once its request id is known.
    record.on_wire = sending
    if sending:
        record.sent = True  # from here a billed job may exist
    if not sending and record.cancel_reason is not None and record.scope is not None:
        # Cancelled while on the wire: if that try was not accepted (a 429),
        # its retry is dropped; an accepted one returns before noticing.
        record.scope.cancel()


def _droppable(record: JobRecord) -> bool:
    """Say whether a submit under way can still be dropped, unsent and unbilled."""
    return record.scope is not None and not record.on_wire


def _ended(record: JobRecord) -> bool:
    # Read after an await: another task may have ended the job meanwhile.
    return record.done


def _fingerprint(request: Request | None) -> dict[str, Any]:
    return {} if request is None else request.fingerprint()
