"""Job: the public handle of one generation, over the engine's private record.

The engine keeps each job's bookkeeping in a :class:`JobRecord` and is the
only writer of it; a :class:`Job` reads the record and reaches the engine
only through the narrow :class:`JobControl` (cancel, abandon). Neither module
imports the other's internals.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._errors import (
    JobCancelledError,
    JobFailedError,
    JobRunningOnError,
    JobTimeoutError,
    RunComfyError,
    SubmissionUncertainError,
)
from ._events import logger
from ._models import Accepted, Cancelled, CancelOutcome, JobResult, JobStatus, Pending

if TYPE_CHECKING:
    from ._polling import PollState


class Outcome(str, enum.Enum):
    """How a job ended, in one word (a ``str``, so it writes as itself)."""

    SUCCEEDED = "succeeded"
    """It finished with an output (billed)."""
    FAILED = "failed"
    """The model run failed on the server."""
    CANCELLED = "cancelled"
    """Cancelled: unsent, or cancelled while queued (not billed)."""
    TIMED_OUT = "timed_out"
    """Its deadline passed (see :attr:`Job.billed`: a running job runs on)."""
    RUNNING_ON = "running_on"
    """The client stopped following it while it ran on the server (billed); re-attach it."""
    UNCERTAIN = "uncertain"
    """Its submit may have created a billed job; the answer was lost."""
    ERROR = "error"
    """Any other error (a rejected input, an unreachable API, ...)."""


def outcome_of(error: BaseException | None) -> Outcome:
    """Name a job's ending by its error (None: it succeeded)."""
    if error is None:
        return Outcome.SUCCEEDED
    for kind, word in _OUTCOMES:
        if isinstance(error, kind):
            return word
    return Outcome.ERROR


_OUTCOMES: tuple[tuple[type[BaseException], Outcome], ...] = (
    (JobTimeoutError, Outcome.TIMED_OUT),
    (JobRunningOnError, Outcome.RUNNING_ON),
    (JobCancelledError, Outcome.CANCELLED),
    (JobFailedError, Outcome.FAILED),
    (SubmissionUncertainError, Outcome.UNCERTAIN),
)


class JobControl(Protocol):
    """The engine, as a job sees it."""

    async def cancel(self, record: JobRecord) -> CancelOutcome | None:
        """Cancel the job now (see :meth:`Job.cancel`)."""
        ...

    def abandon(self, record: JobRecord) -> None:
        """Cancel the job in the background: its waiter stopped waiting."""
        ...


class CancelReason(enum.Enum):
    """Why the engine is cancelling a job."""

    REQUESTED = "requested"
    ABANDONED = "abandoned"
    TIMEOUT = "timeout"
    CLOSED = "closed"


class JobRecord:
    """The engine's bookkeeping for one job. The engine alone writes it."""

    handle: Job  # set by the Job made over it, at once

    __slots__ = (
        "cancel_outcome",
        "cancel_reason",
        "counted",
        "deadline",
        "done",
        "due",
        "failing_since",
        "future",
        "handle",
        "key",
        "model_id",
        "on_wire",
        "poll_failures",
        "poll_seq",
        "polls",
        "ran",
        "request",
        "request_id",
        "retries",
        "scope",
        "sent",
        "state",
        "track",
        "waiters",
        "watchers",
    )

    def __init__(
        self,
        request: Any,
        *,
        key: str | None = None,
        request_id: str | None = None,
        model_id: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self.request = request
        self.key = key
        self.model_id: str | None = request.model_id if request is not None else model_id
        self.request_id = request_id
        self.state: JobStatus = Accepted() if request_id is not None else Pending()
        self.deadline = deadline
        self.polls = 0
        self.retries = 0
        self.cancel_outcome: CancelOutcome | None = None
        self.cancel_reason: CancelReason | None = None
        self.future: anyio.Future[JobResult] = anyio.Future()
        self.done = False  # mirrors the future; read on every poll, so kept plain
        self.counted = False  # holds one of the engine's in-flight places
        self.sent = request_id is not None  # its submit left (or may have)
        self.ran = False  # seen running or finished on the server
        self.poll_seq = 0
        self.due = float("inf")
        self.poll_failures = 0
        self.failing_since: float | None = None
        self.track: PollState | None = None
        self.scope: anyio.CancelScope | None = None  # the submit's, while it runs
        self.on_wire = False  # a try of its submit is on the wire (shielded)
        self.watchers: list[Callable[[Job], object]] | None = None
        self.waiters: anyio.Event | None = None  # wake cancellers when the id is known


class Job:
    """One generation: submitted by the client when limits allow, then polled.

    ``await job`` returns its :class:`JobResult` or raises its own error
    (:class:`JobFailedError`, :class:`JobCancelledError`,
    :class:`JobTimeoutError`, :class:`JobRunningOnError`,
    :class:`SubmissionUncertainError`, an :class:`APIError` ...). Other jobs
    are never affected.

    Every attribute is local knowledge: reading one makes no request.
    """

    __slots__ = ("_control", "_record")

    def __init__(self, record: JobRecord, control: JobControl) -> None:
        self._record = record
        self._control = control
        record.handle = self

    def __repr__(self) -> str:
        record = self._record
        rid = record.request_id or "unsent"
        state = type(record.state).__name__.lower()
        outcome = self.outcome
        ending = f" {outcome.value}" if outcome is not None and outcome.value != state else ""
        return f"<Job {rid} {state}{ending} polls={record.polls} retries={record.retries}>"

    # -- what is known -------------------------------------------------------------

    @property
    def request(self) -> Any:
        """What was asked for (None for a re-attached job)."""
        return self._record.request

    @property
    def key(self) -> str | None:
        """The job's stable key (what a journal knows it by), if it has one."""
        return self._record.key

    @property
    def request_id(self) -> str | None:
        """The server's id, once the submit was accepted (None before)."""
        return self._record.request_id

    @property
    def model_id(self) -> str | None:
        """The model this job runs, if known."""
        return self._record.model_id

    @property
    def state(self) -> JobStatus:
        """The last state seen.

        :class:`Pending` until accepted (not billed), :class:`Accepted` until
        the first poll, then :class:`Queued`, :class:`Running`, and finally
        :class:`Succeeded`, :class:`Failed` or :class:`Cancelled` (unchanged
        if the job ended with a local error such as a timeout).
        """
        return self._record.state

    @property
    def polls(self) -> int:
        """Status polls made for this job."""
        return self._record.polls

    @property
    def retries(self) -> int:
        """Exchanges for this job that were repeated after a fault."""
        return self._record.retries

    @property
    def cancel_outcome(self) -> CancelOutcome | None:
        """What the last remote cancel of this job answered."""
        return self._record.cancel_outcome

    @property
    def deadline(self) -> float | None:
        """When the job times out, on the client's clock."""
        return self._record.deadline

    @property
    def billed(self) -> bool | None:
        """Whether the server ran (and so bills) this job, as far as is known.

        True once it was seen running or finished, or when it was left
        running; False when it provably never ran (never accepted, or
        cancelled while queued); None when nobody can tell (an uncertain
        submit, or an accepted job whose state was never learnt).
        """
        record = self._record
        if record.ran:
            return True
        if record.request_id is None:
            error = self._error()
            return None if isinstance(error, SubmissionUncertainError) else False
        cancel = record.cancel_outcome
        if cancel is not None and cancel.cancelled:
            return False
        if isinstance(record.state, Cancelled):
            return False
        return None

    def done(self) -> bool:
        """Return True once the job has a result or an error."""
        return self._record.done

    @property
    def outcome(self) -> Outcome | None:
        """How the job ended, in one word; None while it runs (see :class:`Outcome`)."""
        if not self._record.done:
            return None
        return outcome_of(self._record.future.exception)

    def result(self) -> JobResult:
        """Return the result now, or raise the job's error.

        Raises:
            RuntimeError: The job is not done yet (``await`` it instead).

        """
        error = self.exception()
        if error is not None:
            raise error
        return self._record.future.return_value

    def exception(self) -> RunComfyError | None:
        """Return the job's error (None if it succeeded).

        Raises:
            RuntimeError: The job is not done yet.

        """
        if not self._record.done:
            raise RuntimeError(f"{self!r} is not done yet; await it")
        return self._error()

    def _error(self) -> RunComfyError | None:
        if not self._record.done:
            return None
        error = self._record.future.exception
        assert error is None or isinstance(error, RunComfyError)  # noqa: S101 - only ours are set
        return error

    # -- waiting and cancelling ------------------------------------------------------

    async def wait(self, *, cancel_remote: bool = True) -> JobResult:
        """Wait for the job's outcome; return the result or raise its error.

        If the waiting task is cancelled (a timeout scope, a shutdown), the
        job is cancelled too: remotely if it is still queued, so it is not
        billed. A job that already runs cannot be cancelled; it is then
        polled to its end and its outcome kept on the job. Pass
        ``cancel_remote=False`` to leave the job alone when you stop waiting.
        """
        try:
            await self._record.future.wait()
        except anyio.get_cancelled_exc_class():
            if cancel_remote and not self._record.done:
                self._control.abandon(self._record)
            raise
        return self.result()

    async def _settled(self) -> None:
        await self._record.future.wait()

    def __await__(self) -> Generator[Any, Any, JobResult]:
        return self.wait().__await__()

    async def cancel(self) -> CancelOutcome | None:
        """Cancel the job: locally if unsent, remotely if queued.

        Returns the server's answer, or None when nothing had been sent (the
        job is then simply dropped, unbilled). ``outcome.cancelled`` is False
        when the job was already running: it runs on, is billed, and is still
        polled, so its result arrives as usual.
        """
        return await self._control.cancel(self._record)

    def add_done_callback(self, callback: Callable[[Job], object]) -> None:
        """Call *callback(job)* when the job is done (at once if it already is)."""
        record = self._record
        if record.done:
            callback(self)
            return
        if record.watchers is None:
            record.watchers = []
        record.watchers.append(callback)

    def to_json(self) -> Mapping[str, Any]:
        """Describe the job as JSON: key, request id, state, outcome, billing, counts."""
        error = self._error()
        return {
            "key": self.key,
            "request_id": self.request_id,
            "model_id": self.model_id,
            "state": type(self.state).__name__.lower(),
            "outcome": self.outcome.value if self.outcome is not None else None,
            "billed": self.billed,
            "error": None if error is None else error.message,
            "polls": self.polls,
            "retries": self.retries,
        }


def settle(record: JobRecord, result: JobResult | None, error: RunComfyError | None) -> None:
    """Resolve a job's future (the engine's one way to end a job) and run its callbacks."""
    job = record.handle
    if error is None:
        record.future.return_value = result  # type: ignore[assignment]
    else:
        if error.request_id is None:
            error.request_id = record.request_id
        record.future.exception = error
    record.done = True
    watchers, record.watchers = record.watchers, None
    for watcher in watchers or ():
        try:
            watcher(job)
        except Exception:  # noqa: BLE001, PERF203 - a callback must not break the engine
            logger.exception("done-callback %r of %r failed", watcher, job)
