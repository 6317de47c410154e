"""The engine: submits jobs as limits allow and polls them until they end.

One dispatcher task decides *what* to send next, in this order: remote
cancels (they stop billing), polls that are due, then submits (only while
fewer than ``max_jobs_in_flight`` jobs are in flight; the session's first
submit alone, as a probe of the token and balance). It hands work only to
idle workers of a fixed pool of ``max_concurrent_requests``, all ready work
in one pass, so priorities are decided late and requests due together leave
together. Polls wait in a heap keyed by due time, deadlines in another;
nothing else sleeps, so ten thousand jobs cost two heaps, not ten thousand
timers.

All tasks live in the client's task group. A submit is shielded from
cancellation: once its body may have left, we wait for the answer, because a
lost answer is a billed job nobody knows of.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Final

import anyio
import anyio.abc
import anyio.lowlevel

from ._api import API
from ._errors import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    InsufficientBalanceError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    ProtocolError,
    RateLimitedError,
    RunComfyError,
    ServerError,
    TransportError,
)
from ._events import JobFinished, JobStatusChanged, JobSubmitted, Monitor, logger
from ._job import Job, outcome_name
from ._models import (
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
from ._polling import PollPolicy, PollState

REPLAN_SLICE: Final = 256
"""Jobs re-planned between two yields to the event loop."""

MAX_POLL_FAILURES: Final = 4
"""Polls in a row that may fail (after their own retries) before a job gives up."""


class _Work(Enum):
    SUBMIT = "submit"
    POLL = "poll"
    CANCEL = "cancel"


_ACCOUNT_ERRORS = (AuthenticationError, InsufficientBalanceError)
_FINISHED_WORDS = frozenset({"completed", "succeeded", "failed"})
_TRANSIENT = (ServerError, TransportError, ProtocolError, RateLimitedError)


class Scheduler:
    """Runs every job of one client: submission queue, poll heap, deadlines."""

    def __init__(
        self,
        api: API,
        monitor: Monitor,
        *,
        policy: PollPolicy,
        max_jobs_in_flight: int,
        workers: int,
        cancel_timeout: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._api = api
        self._monitor = monitor
        self._policy = policy
        self._max_in_flight = max_jobs_in_flight
        self._workers = workers
        self._cancel_timeout = cancel_timeout
        # The event loop's own clock (what anyio.current_time() reads), taken
        # at start: asking anyio for it costs a backend lookup every time.
        self._clock: Callable[[], float] = clock or anyio.current_time
        self._handoff: asyncio.Queue[tuple[_Work, Job, str]] | None = None
        self._pending: deque[Job] = deque()
        self._cancels: deque[tuple[Job, str]] = deque()
        self._polls: list[tuple[float, int, int, Job]] = []
        self._deadlines: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._live: set[Job] = set()
        self._sent_waiters: dict[Job, anyio.Event] = {}
        self._in_flight = 0
        self._wake = anyio.Event()
        self._sleep_until = -math.inf
        self._idle = 0  # workers waiting for work
        self._submitting = 0
        # Until one submit is answered past authentication, submits go one at
        # a time: a bad token or an empty balance then costs one request, not
        # a burst of max_concurrent_requests.
        self._credentials_ok = False
        self._waiting_for_worker = False
        self._accepting = False
        self._account_error: RunComfyError | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return (
            f"<Scheduler pending={len(self._pending)} in_flight={self._in_flight} "
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
        if self._clock is anyio.current_time:
            self._clock = asyncio.get_running_loop().time
        # Work is handed only to idle workers, all that are ready at once, so
        # priorities are decided late and requests due together leave
        # together (one event-loop turn, batched I/O). A plain asyncio queue:
        # anyio's memory streams cost several times as much per item, and
        # this hand-off happens once per request.
        self._handoff = asyncio.Queue()
        self._task_group = task_group
        self._accepting = True
        task_group.start_soon(self._dispatch, self._handoff, name="runcomfy dispatcher")
        for index in range(self._workers):
            task_group.start_soon(self._work, self._handoff, name=f"runcomfy worker {index}")

    def stop_accepting(self) -> None:
        """Refuse new jobs and stop sending unsent ones."""
        self._accepting = False
        self._notify()

    async def close(self) -> list[Job]:
        """End every unfinished job; return those that run on (and are billed).

        Unsent jobs are dropped (nothing billed). Queued or unpolled ones get a
        remote cancel, shielded and bounded by ``cancel_timeout``. Jobs seen
        running cannot be cancelled: they end here with
        :class:`JobCancelledError` saying so, and are returned.
        """
        self._accepting = False
        running_on: list[Job] = []
        to_cancel: list[Job] = []
        for job in list(self._live):
            if job.request_id is None:
                self._finish(
                    job,
                    error=JobCancelledError(
                        "the client closed before this job was sent; nothing was billed"
                    ),
                )
            elif isinstance(job.state, Running):
                running_on.append(job)
            else:
                to_cancel.append(job)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._cancel_timeout):
            async with anyio.create_task_group() as group:
                for job in to_cancel:
                    group.start_soon(self._cancel_on_close, job)
        running_on.extend(job for job in to_cancel if not job.done())
        for job in running_on:
            if not job.done():
                self._finish(
                    job,
                    error=JobCancelledError(
                        "the client closed while this job was running; it runs on and is "
                        f"billed: re-attach it with request id {job.request_id}",
                        request_id=job.request_id,
                    ),
                )
        if running_on:
            logger.warning(
                "closed with %d job(s) still running on the server (billed): %s",
                len(running_on),
                ", ".join(str(job.request_id) for job in running_on[:20]),
            )
        return running_on

    async def _cancel_on_close(self, job: Job) -> None:
        outcome = await self._remote_cancel(job)
        if outcome is None:
            return
        if outcome.cancelled:
            self._finish(job, error=JobCancelledError("cancelled remotely when the client closed"))
        elif outcome.status in _FINISHED_WORDS and job.request_id is not None:
            # It finished before the cancel arrived: fetch its outcome rather
            # than report a done (and billed) job as still running.
            with contextlib.suppress(RunComfyError):
                self._observe(job, await self._api.result(job.request_id))

    # -- intake ------------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Queue *job* for submission."""
        self._admit(job)
        self._pending.append(job)
        self._notify()

    def attach(self, job: Job) -> None:
        """Track an already submitted job (by its request id)."""
        self._admit(job)
        self._in_flight += 1
        job._counted = True
        now = self._clock()
        key = job.model_id or "unknown"
        job._track = PollState(key=key, scale=1.0, submitted_at=now)
        # Its age is unknown: ask at once rather than guess.
        self._book_at(job, now)
        self._notify()

    def _admit(self, job: Job) -> None:
        if not self._accepting:
            raise ClientClosedError("the client is not open: use it inside 'async with'")
        self._live.add(job)
        if job.deadline is not None:
            heapq.heappush(self._deadlines, (job.deadline, next(self._seq), job))

    def abandon(self, job: Job) -> None:
        """Cancel *job* in the background: the task awaiting it was cancelled."""
        self._request_cancel(job, "abandoned")

    async def cancel(self, job: Job) -> CancelOutcome | None:
        """Cancel *job* now (see :meth:`Job.cancel`)."""
        if job.done():
            return job.cancel_outcome
        if job.request_id is None:
            if not job._counted:
                self._finish(
                    job, error=JobCancelledError("cancelled before it was sent; nothing was billed")
                )
                return None
            # Its submit is under way: cancel as soon as the id is known.
            await self._sent_waiters.setdefault(job, anyio.Event()).wait()
            if job.done() or job.request_id is None:
                return job.cancel_outcome
        outcome = await self._remote_cancel(job)
        if outcome is not None and outcome.cancelled and not job.done():
            self._finish(job, error=JobCancelledError("cancelled remotely"))
        return outcome

    def _request_cancel(self, job: Job, reason: str) -> None:
        if job.done():
            return
        if job.request_id is None:
            if not job._counted:
                error: RunComfyError = (
                    JobTimeoutError(
                        "the deadline passed before this job was sent; nothing was billed"
                    )
                    if reason == "timeout"
                    else JobCancelledError("cancelled before it was sent; nothing was billed")
                )
                self._finish(job, error=error)
            else:
                job._cancel_reason = reason  # its submit is under way
            return
        if reason == "timeout" and isinstance(job.state, Running):
            # A running job cannot be cancelled; do not spend a request on it.
            self._finish(
                job,
                error=JobTimeoutError(
                    "the deadline passed while the job was running; a running job cannot "
                    f"be cancelled, so it runs on and is billed (request id {job.request_id})"
                ),
            )
            return
        job._cancel_reason = reason
        job._poll_seq += 1  # drop its booked poll: the cancel decides what comes next
        self._cancels.append((job, reason))
        self._notify()

    # -- dispatching -------------------------------------------------------------

    def _notify(self) -> None:
        self._wake.set()

    async def _dispatch(self, handoff: asyncio.Queue[tuple[_Work, Job, str]]) -> None:
        while True:
            now = self._clock()
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
            if self._wake.is_set():
                self._wake = anyio.Event()
                continue
            self._waiting_for_worker = busy
            self._sleep_until = math.inf if busy else self._next_due()
            wait = self._sleep_until - now
            with anyio.move_on_after(wait if math.isfinite(wait) else None):
                await self._wake.wait()
            self._sleep_until = -math.inf  # awake: bookings need not wake it
            self._waiting_for_worker = False

    def _ready(self, now: float) -> bool:
        """Say whether some work could be handed out now (stale entries count)."""
        return bool(
            self._cancels
            or (self._polls and self._polls[0][0] <= now)
            or (self._deadlines and self._deadlines[0][0] <= now)
            or (self._accepting and self._pending and self._in_flight < self._max_in_flight)
        )

    def _next_due(self) -> float:
        due = self._polls[0][0] if self._polls else math.inf
        if self._deadlines:
            due = min(due, self._deadlines[0][0])
        return due

    def _next(self, now: float) -> tuple[_Work, Job, str] | None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, job = heapq.heappop(self._deadlines)
            self._request_cancel(job, "timeout")
        if self._cancels:
            job, reason = self._cancels.popleft()
            return (_Work.CANCEL, job, reason)
        while self._polls and self._polls[0][0] <= now:
            _, _, seq, job = heapq.heappop(self._polls)
            if seq == job._poll_seq and not job.done():
                return (_Work.POLL, job, "")
        if self._account_error is not None:
            while self._pending:
                self._fail_unsent(self._pending.popleft())
        while self._accepting and self._pending and self._in_flight < self._max_in_flight:
            if not self._credentials_ok and self._submitting:
                break  # the first submit probes the token and balance alone
            job = self._pending.popleft()
            if job.done():
                continue
            self._in_flight += 1
            self._submitting += 1
            job._counted = True
            return (_Work.SUBMIT, job, "")
        return None

    def _fail_unsent(self, job: Job) -> None:
        cause = self._account_error
        assert cause is not None  # noqa: S101
        error = type(cause)(
            f"not sent, because an earlier submit failed: {cause.message}",
            status=cause.status,
            error_code=cause.error_code,
        )
        self._finish(job, error=error)

    def _book_poll(self, job: Job, now: float) -> None:
        track = job._track
        assert track is not None  # noqa: S101
        self._book_at(job, now + self._policy.next_delay(track, now))

    def _book_at(self, job: Job, due: float) -> None:
        job._poll_seq += 1
        job._due = due
        heapq.heappush(self._polls, (due, next(self._seq), job._poll_seq, job))
        if due < self._sleep_until:
            self._notify()  # the dispatcher sleeps past this poll: wake it

    def _replan(self, key: str) -> None:
        """Pull polls earlier where the policy just learned they are due sooner."""
        if self._task_group is not None:
            self._task_group.start_soon(self._replan_in_steps, key, name="runcomfy re-plan")

    async def _replan_in_steps(self, key: str) -> None:
        # Ten thousand jobs take tens of milliseconds to re-plan: do it a
        # slice at a time, so the event loop never stalls on it.
        jobs = [job for job in self._live if job._track is not None and job._track.key == key]
        for start in range(0, len(jobs), REPLAN_SLICE):
            now = self._clock()
            for job in jobs[start : start + REPLAN_SLICE]:
                track = job._track
                if track is None or job.done() or job._cancel_reason is not None:
                    continue
                due = now + self._policy.next_delay(track, now)
                if due < job._due:
                    self._book_at(job, due)
            await anyio.lowlevel.checkpoint()

    # -- working -----------------------------------------------------------------

    async def _work(self, handoff: asyncio.Queue[tuple[_Work, Job, str]]) -> None:
        while True:
            self._idle += 1
            if self._waiting_for_worker:
                self._waiting_for_worker = False
                self._notify()
            try:
                kind, job, reason = await handoff.get()
            finally:
                self._idle -= 1
            try:
                if kind is _Work.SUBMIT:
                    await self._submit(job)
                elif kind is _Work.POLL:
                    await self._poll(job)
                else:
                    await self._cancel_work(job, reason)
            except Exception as exc:  # noqa: BLE001 - a bug must cost one job, not a worker
                logger.exception("internal error on %r", job)
                if not job.done():
                    self._finish(job, error=RunComfyError(f"internal error: {exc!r}"))

    async def _submit(self, job: Job) -> None:
        assert job.request is not None  # noqa: S101
        # Shielded: once the body may have left, the answer must be read, or
        # a billed job would exist that nobody knows of.
        with anyio.CancelScope(shield=True):
            try:
                submission = await self._api.submit(job.request, on_retry=job._count_retry)
            except RunComfyError as exc:
                if isinstance(exc, _ACCOUNT_ERRORS) and self._account_error is None:
                    # Every other submit would fail the same way: send no more.
                    self._account_error = exc
                elif isinstance(exc, APIError):
                    self._credentials_ok = True  # the server answered past auth
                self._finish(job, error=exc)
                self._wake_cancellers(job)
                return
            finally:
                self._submitting -= 1
                self._notify()
        self._credentials_ok = True
        now = self._clock()
        job.request_id = submission.request_id
        self._wake_cancellers(job)
        job._track = PollState(
            key=job.request.model_id, scale=job.request.run_time_scale, submitted_at=now
        )
        self._monitor.emit(JobSubmitted(job))
        logger.debug("submitted %s as %s", job.request.model_id, job.request_id)
        if job._cancel_reason is not None:
            self._request_cancel(job, job._cancel_reason)
            return
        self._book_poll(job, now)

    def _wake_cancellers(self, job: Job) -> None:
        event = self._sent_waiters.pop(job, None)
        if event is not None:
            event.set()

    async def _poll(self, job: Job) -> None:
        assert job.request_id is not None  # noqa: S101
        assert job._track is not None  # noqa: S101
        try:
            state = await self._fetch(job, job.request_id, job._track.phase)
        except APIError as exc:
            if not isinstance(exc, _TRANSIENT):
                self._finish(job, error=exc)
                return
            failure: RunComfyError = exc
        except TransportError as exc:
            failure = exc
        else:
            job.polls += 1
            job._poll_failures = 0
            self._observe(job, state)
            return
        job.polls += 1
        job._poll_failures += 1
        if job._poll_failures >= MAX_POLL_FAILURES:
            self._finish(job, error=failure)
            return
        self._book_poll(job, self._clock())

    async def _fetch(
        self, job: Job, request_id: str, phase: str
    ) -> Queued | Running | Succeeded | Failed | Cancelled:
        """Poll the endpoint that tells the most for one request.

        Only ``/status`` reports a queue position, so a job not yet seen
        running is polled there; a running one is polled on ``/result``,
        which answers with the output itself once the job is done (no extra
        request at the end). A finish seen on ``/status`` costs one more
        request, for the outcome.
        """
        if phase == "running":
            return await self._api.result(request_id, on_retry=job._count_retry)
        state = await self._api.status(request_id, on_retry=job._count_retry)
        if isinstance(state, (Completed, Failed)):
            job.polls += 1
            return await self._api.result(request_id, on_retry=job._count_retry)
        return state

    def _observe(self, job: Job, state: Queued | Running | Succeeded | Failed | Cancelled) -> None:
        terminal = isinstance(state, (Succeeded, Failed, Cancelled))
        if job.done() or (job._cancel_reason is not None and not terminal):
            return  # a cancel is under way; it decides what comes next
        now = self._clock()
        old = job.state
        track = job._track
        assert track is not None  # noqa: S101
        match state:
            case Succeeded(result=result):
                self._set_state(job, old, state)
                replan = self._policy.finished(track, now, result.run_seconds)
                self._finish(job, result=result)
                if replan:
                    self._replan(track.key)
            case Failed(message=message, error=error):
                self._set_state(job, old, state)
                self._finish(job, error=JobFailedError(message, error=error))
            case Cancelled():
                self._set_state(job, old, state)
                self._finish(job, error=JobCancelledError("the job was cancelled on the server"))
            case Queued(position=position):
                track.see("queued", position, now)
                self._policy.observe(track, now)
                self._set_state(job, old, state)
                self._book_poll(job, now)
            case Running():
                track.see("running", None, now)
                self._policy.observe(track, now)
                self._set_state(job, old, state)
                self._book_poll(job, now)

    def _set_state(self, job: Job, old: JobStatus, new: JobStatus) -> None:
        job.state = new
        if new != old:
            self._monitor.emit(JobStatusChanged(job, old, new))

    async def _cancel_work(self, job: Job, reason: str) -> None:
        if job.done():
            return
        outcome = await self._remote_cancel(job)
        if job.done():
            return
        if outcome is not None and outcome.cancelled:
            error: RunComfyError = (
                JobTimeoutError(
                    "the deadline passed; the job was cancelled while queued (not billed)",
                    cancel=outcome,
                )
                if reason == "timeout"
                else JobCancelledError("cancelled remotely, as its waiter stopped waiting")
            )
            self._finish(job, error=error)
            return
        if reason == "timeout":
            self._finish(
                job,
                error=JobTimeoutError(
                    "the deadline passed and the job could not be cancelled; it runs on and "
                    f"is billed (request id {job.request_id})",
                    cancel=outcome,
                ),
            )
            return
        # Abandoned but running: it is billed anyway, so see it through and
        # keep its result on the job rather than lose it.
        logger.warning(
            "job %s could not be cancelled (already running); it is billed and still tracked",
            job.request_id,
        )
        job._cancel_reason = None
        self._book_poll(job, self._clock())

    async def _remote_cancel(self, job: Job) -> CancelOutcome | None:
        assert job.request_id is not None  # noqa: S101
        outcome: CancelOutcome | None = None
        with anyio.move_on_after(self._cancel_timeout):
            try:
                outcome = await self._api.cancel(job.request_id, on_retry=job._count_retry)
            except RunComfyError as exc:
                logger.warning("remote cancel of %s failed: %s", job.request_id, exc)
        if outcome is not None:
            job.cancel_outcome = outcome
            if not outcome.cancelled:
                logger.info("job %s is not cancellable (status %s)", job.request_id, outcome.status)
        return outcome

    # -- endings -----------------------------------------------------------------

    def _finish(
        self, job: Job, *, result: JobResult | None = None, error: RunComfyError | None = None
    ) -> None:
        if job.done():
            return
        self._live.discard(job)
        job._poll_seq += 1
        if job._counted:
            self._in_flight -= 1
        if error is None:
            assert result is not None  # noqa: S101
            job._set_result(result)
            self._monitor.jobs["succeeded"] += 1
        else:
            job._set_error(error)
            self._monitor.jobs[outcome_name(error)] += 1
        self._monitor.emit(JobFinished(job))
        self._notify()
