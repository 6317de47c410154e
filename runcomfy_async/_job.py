"""Job: the handle of one generation, and its one-shot outcome."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import JobCancelledError, JobFailedError, JobTimeoutError, RunComfyError
from ._events import logger
from ._models import (
    CancelOutcome,
    ImageToVideo,
    JobResult,
    JobStatus,
    ModelRequest,
    Pending,
)

if TYPE_CHECKING:
    from ._polling import PollState
    from ._scheduler import Scheduler


def outcome_name(error: BaseException | None) -> str:
    """Name a job's ending by its error (None: it succeeded)."""
    if error is None:
        return "succeeded"
    if isinstance(error, JobTimeoutError):
        return "timed_out"
    if isinstance(error, JobCancelledError):
        return "cancelled"
    if isinstance(error, JobFailedError):
        return "failed"
    return "error"


class Job:
    """One generation: submitted by the client when limits allow, then polled.

    ``await job`` returns its :class:`JobResult` or raises its own error
    (:class:`JobFailedError`, :class:`JobCancelledError`,
    :class:`JobTimeoutError`, :class:`SubmissionUncertainError`, an
    :class:`APIError` ...). Other jobs are never affected.

    Every attribute is local knowledge: reading them makes no request.

    Attributes:
        request: What was asked for.
        request_id: The server's id, once the submit was accepted (None before).
        state: The last state seen: :class:`Pending` until accepted, then
            :class:`Queued`, :class:`Running`, and finally :class:`Succeeded`,
            :class:`Failed` or :class:`Cancelled` (unchanged if the job ended
            with a local error such as a timeout).
        polls: Status polls made for this job.
        retries: Exchanges for this job that were repeated after a fault.
        cancel_outcome: What the last remote cancel of this job answered.

    """

    __slots__ = (
        "_callbacks",
        "_cancel_reason",
        "_counted",
        "_deadline",
        "_done",
        "_due",
        "_future",
        "_model_id",
        "_poll_failures",
        "_poll_seq",
        "_scheduler",
        "_track",
        "cancel_outcome",
        "polls",
        "request",
        "request_id",
        "retries",
        "state",
    )

    def __init__(
        self,
        request: ImageToVideo | ModelRequest | None,
        scheduler: Scheduler,
        *,
        request_id: str | None = None,
        model_id: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self.request = request
        self._model_id = request.model_id if request is not None else model_id
        self.request_id = request_id
        self.state: JobStatus = Pending()
        self.polls = 0
        self.retries = 0
        self.cancel_outcome: CancelOutcome | None = None
        self._scheduler = scheduler
        self._future: anyio.Future[JobResult] = anyio.Future()
        self._done = False  # mirrors the future; read on every poll, so kept plain
        self._deadline = deadline
        self._callbacks: list[Callable[[Job], object]] | None = None
        self._cancel_reason: str | None = None
        self._counted = False  # holds one of the scheduler's in-flight places
        self._poll_seq = 0
        self._due = float("inf")  # when its booked poll is due
        self._poll_failures = 0
        self._track: PollState | None = None

    def __repr__(self) -> str:
        rid = self.request_id or "unsent"
        outcome = ""
        if self.done():
            error = self.exception()
            outcome = f" error={type(error).__name__}" if error is not None else " ok"
        state = type(self.state).__name__.lower()
        return f"<Job {rid} {state}{outcome} polls={self.polls} retries={self.retries}>"

    @property
    def model_id(self) -> str | None:
        """The model this job runs, if known."""
        return self._model_id

    def done(self) -> bool:
        """Return True once the job has a result or an error."""
        return self._done

    @property
    def deadline(self) -> float | None:
        """When the job times out, on :func:`anyio.current_time`'s clock."""
        return self._deadline

    @property
    def outcome(self) -> str | None:
        """How the job ended, in one word; None while it runs.

        ``succeeded``, ``failed`` (the model run failed), ``cancelled``,
        ``timed_out``, or ``error`` (any other error, such as an uncertain
        submit or a rejected input).
        """
        if not self.done():
            return None
        return outcome_name(self._future.exception)

    def result(self) -> JobResult:
        """Return the result now, or raise the job's error.

        Raises:
            RuntimeError: The job is not done yet (``await`` it instead).

        """
        error = self.exception()
        if error is not None:
            raise error
        return self._future.return_value

    def exception(self) -> RunComfyError | None:
        """Return the job's error (None if it succeeded).

        Raises:
            RuntimeError: The job is not done yet.

        """
        if not self.done():
            raise RuntimeError(f"{self!r} is not done yet; await it")
        error = self._future.exception
        assert error is None or isinstance(error, RunComfyError)  # noqa: S101 - only ours are set
        return error

    async def wait(self, *, cancel_remote: bool = True) -> JobResult:
        """Wait for the job's outcome; return the result or raise its error.

        If the waiting task is cancelled (a timeout scope, a shutdown), the
        job is cancelled too: remotely if it is still queued, so it is not
        billed. A job that already runs cannot be cancelled; it is then
        polled to its end and its outcome kept on the job. Pass
        ``cancel_remote=False`` to leave the job alone when you stop waiting.
        """
        try:
            await self._future.wait()
        except anyio.get_cancelled_exc_class():
            if cancel_remote and not self.done():
                self._scheduler.abandon(self)
            raise
        return self.result()

    def __await__(self) -> Generator[Any, Any, JobResult]:
        return self.wait().__await__()

    async def cancel(self) -> CancelOutcome | None:
        """Cancel the job: locally if unsent, remotely if queued.

        Returns the server's answer, or None when nothing had been sent (the
        job is then simply dropped, unbilled). ``outcome.cancelled`` is False
        when the job was already running: it runs on, is billed, and is still
        polled, so its result arrives as usual.
        """
        return await self._scheduler.cancel(self)

    def add_done_callback(self, callback: Callable[[Job], object]) -> None:
        """Call *callback(job)* when the job is done (at once if it already is)."""
        if self.done():
            callback(self)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    # -- used by the client and the scheduler only -----------------------------

    async def _settled(self) -> None:
        await self._future.wait()

    def _set_result(self, result: JobResult) -> None:
        self._future.return_value = result
        self._done = True
        self._run_callbacks()

    def _set_error(self, error: RunComfyError) -> None:
        if error.request_id is None:
            error.request_id = self.request_id
        self._future.exception = error
        self._done = True
        self._run_callbacks()

    def _count_retry(self) -> None:
        self.retries += 1

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:  # noqa: BLE001, PERF203 - a callback must not break the engine
                logger.exception("done-callback %r of %r failed", callback, self)
