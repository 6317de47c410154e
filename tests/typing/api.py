"""Type-check only (mypy --strict): the public API as a user's code sees it.

Not a test module: pytest does not collect it (no ``test_`` prefix) and
nothing here runs. Each ``assert_type`` pins a public signature.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from typing_extensions import assert_type

import runcomfy_async
from runcomfy_async import (
    API,
    DEFAULT_BASE_URL,
    DREAMINA_I2V_MODEL_ID,
    Accepted,
    APIError,
    Cancelled,
    CancelOutcome,
    Clock,
    Completed,
    Event,
    Failed,
    FixedInterval,
    ImageToVideo,
    InputRejectedError,
    Job,
    JobFailedError,
    JobFinished,
    JobResult,
    JobRunningOnError,
    JobStatus,
    JobTimeoutError,
    Limits,
    ModelRequest,
    Outcome,
    Pending,
    Queued,
    RateLimitedError,
    Request,
    RequestRetried,
    RetryPolicy,
    RunComfy,
    RunComfyError,
    Running,
    SQLiteJournal,
    Stats,
    Submission,
    SubmissionUncertainError,
    Succeeded,
    Timeouts,
    TransportError,
    ValidationError,
    VirtualClock,
)

VERSION: str = runcomfy_async.__version__
BASE_URL: str = DEFAULT_BASE_URL
MODEL_ID: str = DREAMINA_I2V_MODEL_ID


def build_requests() -> list[Request]:
    """Typed and plain requests are both Requests."""
    typed = ImageToVideo(prompt="a cat", image_url="https://x.test/a.png", seed=7, frames=241)
    from_disk = ImageToVideo.from_file("cat.png", prompt="a cat", frames=121)
    plain = ModelRequest("acme/generic/text-to-video", {"prompt": "a cat"}, run_time_scale=2.0)
    assert_type(typed.frames, Literal[121, 241])
    assert_type(typed.run_time_scale, float)
    assert_type(from_disk, ImageToVideo)
    assert_type(plain.model_id, str)
    return [typed, from_disk, plain]


def describe(status: JobStatus) -> str:  # noqa: PLR0911 - one return per state
    """Job states are a closed set to match on."""
    match status:
        case Pending():
            return "not sent"
        case Accepted():
            return "accepted (billed), not yet polled"
        case Queued(position=position):
            assert_type(position, int | None)
            return f"queued at {position}"
        case Running():
            return "running"
        case Completed():
            return "finished; ask /result"
        case Succeeded(result=result):
            assert_type(result, JobResult)
            return result.video_url or "no video"
        case Failed(message=message):
            return message
        case Cancelled():
            return "cancelled"


def read_result(result: JobResult) -> float:
    """Result fields are typed."""
    assert_type(result.video_url, str | None)
    assert_type(result.video_urls, tuple[str, ...])
    assert_type(result.urls, tuple[str, ...])
    assert_type(result.created_at, datetime | None)
    assert_type(result.cost, float | None)
    return result.run_seconds or 0.0


def on_event(event: Event) -> None:
    """Hooks receive events."""
    if isinstance(event, RequestRetried):
        assert_type(event.delay, float)
        assert_type(event.error, Exception)
    elif isinstance(event, JobFinished):
        assert_type(event.job, Job)


async def run_batch() -> None:
    """The high-level client: submit, await, gather, iterate."""
    async with RunComfy(
        "token",
        base_url="https://model-api.runcomfy.net",
        limits=Limits(max_jobs_in_flight=100, max_concurrent_requests=16, max_rate=20.0),
        retry=RetryPolicy(attempts=3, initial=0.5, maximum=10.0),
        timeouts=Timeouts(connect=5.0, read=30.0, total=60.0),
        polling=FixedInterval(interval=5.0),
        job_timeout=600.0,
        hooks=[on_event],
    ) as client:
        assert_type(client, RunComfy)
        job = client.submit(build_requests()[0], timeout=300.0)
        assert_type(job, Job)
        assert_type(job.request_id, str | None)
        assert_type(job.state, JobStatus)
        result = await job
        assert_type(result, JobResult)
        assert_type(await job.cancel(), CancelOutcome | None)

        jobs = client.submit_many(build_requests())
        assert_type(jobs, list[Job])
        async for done in client.as_completed(jobs):
            error = done.exception()
            assert_type(error, RunComfyError | None)
            if error is None:
                read_result(done.result())

        outcomes = await client.run(build_requests(), timeout=900.0)
        for outcome in outcomes:
            if isinstance(outcome, RunComfyError):
                assert_type(outcome.message, str)
            else:
                assert_type(outcome, JobResult)

        followed = client.attach("request-id", model_id=DREAMINA_I2V_MODEL_ID)
        assert_type(followed, Job)
        assert_type(followed.billed, bool | None)
        assert_type(followed.outcome, Outcome | None)
        assert_type(followed.key, str | None)

        async for streamed in client.stream(iter(build_requests()), window=8):
            assert_type(streamed, Job)
        assert_type(await client.resume(), list[Job])
        assert_type(client.running_on, list[Job])
        assert_type(client.clock, Clock)
        assert_type(client.stats, Stats)
        assert_type(client.stats.total_requests, int)


async def low_level(client: RunComfy) -> None:
    """The four single calls, with their closed result types."""
    api = client.api
    assert_type(api, API)
    submission = await api.submit(ModelRequest("acme/generic/text-to-video", {}))
    assert_type(submission, Submission)
    rid = submission.request_id
    assert_type(await api.status(rid), Queued | Running | Completed | Failed | Cancelled)
    assert_type(await api.result(rid), Queued | Running | Succeeded | Failed | Cancelled)
    outcome = await api.cancel(rid)
    assert_type(outcome.cancelled, bool)


def handle(error: Exception) -> str:
    """Errors carry typed attributes."""
    if isinstance(error, ValidationError):
        return f"{error.field}/{error.rule}"
    if isinstance(error, SubmissionUncertainError):
        return error.model_id
    if isinstance(error, RateLimitedError):
        assert_type(error.retry_after, float | None)
    if isinstance(error, InputRejectedError):
        return repr(error.detail)
    if isinstance(error, JobTimeoutError):
        assert_type(error.cancel, CancelOutcome | None)
    if isinstance(error, JobFailedError):
        return repr(error.error)
    if isinstance(error, TransportError):
        assert_type(error.sent, bool)
    if isinstance(error, APIError):
        assert_type(error.status, int | None)
        assert_type(error.error_code, int | None)
    return str(error)


async def durable_and_virtual() -> None:
    """A journal by path or by object, and a virtual clock for tests."""
    clock = VirtualClock()
    assert_type(clock.now(), float)
    async with clock.autojumping(io=False):
        await clock.advance(1.0)
    journal = SQLiteJournal("batch.journal")
    async with RunComfy("token", journal=journal, clock=clock, resubmit_uncertain=False) as client:
        job = client.submit(build_requests()[0], key="line-1")
        assert_type(job.key, str | None)
    async with RunComfy("token", journal="batch.journal", model_cache=False):
        pass


def ran_on(error: Exception) -> bool:
    """A job left running at close is billed and re-attachable."""
    return isinstance(error, JobRunningOnError)
