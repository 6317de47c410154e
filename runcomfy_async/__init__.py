"""An asyncio-native client for the RunComfy Model API.

Run many paid video generations at once, safely and cheaply::

    from runcomfy_async import ImageToVideo, RunComfy

    async with RunComfy() as client:
        job = client.submit(ImageToVideo(prompt="...", image_url="https://..."))
        result = await job
        print(result.video_url)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._api import API
from ._client import RunComfy
from ._clock import Clock, RealClock, TimerHandle, VirtualClock
from ._config import DEFAULT_BASE_URL, Limits, RetryPolicy, Timeouts
from ._errors import (
    APIError,
    APIUnreachableError,
    AuthenticationError,
    ClientClosedError,
    ConnectError,
    DownloadError,
    DownloadTimeoutError,
    InputRejectedError,
    InsufficientBalanceError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobRunningOnError,
    JobTimeoutError,
    JournalError,
    MissingTokenError,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    RequestTimeoutError,
    RunComfyError,
    ServerError,
    SubmissionUncertainError,
    TransportError,
    ValidationError,
)
from ._events import (
    Event,
    Hook,
    JobFinished,
    JobStatusChanged,
    JobSubmitted,
    RequestRetried,
    Stats,
)
from ._image_format import ImageInfo
from ._images import DREAMINA_IMAGE_RULES, ImageRules, LocalImage
from ._job import Job, Outcome
from ._journal import Journal, JournalRecord, NullJournal, SQLiteJournal
from ._models import (
    Accepted,
    Cancelled,
    CancelOutcome,
    Completed,
    Failed,
    JobResult,
    JobStatus,
    Pending,
    Queued,
    Running,
    Submission,
    Succeeded,
)
from ._polling import AdaptivePolling, FixedInterval, Phase, PollPolicy, PollState
from ._requests import DREAMINA_I2V_MODEL_ID, ImageToVideo, ModelRequest, Request

__all__ = [
    "API",
    "DEFAULT_BASE_URL",
    "DREAMINA_I2V_MODEL_ID",
    "DREAMINA_IMAGE_RULES",
    "APIError",
    "APIUnreachableError",
    "Accepted",
    "AdaptivePolling",
    "AuthenticationError",
    "CancelOutcome",
    "Cancelled",
    "ClientClosedError",
    "Clock",
    "Completed",
    "ConnectError",
    "DownloadError",
    "DownloadTimeoutError",
    "Event",
    "Failed",
    "FixedInterval",
    "Hook",
    "ImageInfo",
    "ImageRules",
    "ImageToVideo",
    "InputRejectedError",
    "InsufficientBalanceError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobFinished",
    "JobResult",
    "JobRunningOnError",
    "JobStatus",
    "JobStatusChanged",
    "JobSubmitted",
    "JobTimeoutError",
    "Journal",
    "JournalError",
    "JournalRecord",
    "Limits",
    "LocalImage",
    "MissingTokenError",
    "ModelNotFoundError",
    "ModelRequest",
    "NotFoundError",
    "NullJournal",
    "Outcome",
    "Pending",
    "PermissionDeniedError",
    "Phase",
    "PollPolicy",
    "PollState",
    "ProtocolError",
    "Queued",
    "RateLimitedError",
    "RealClock",
    "Request",
    "RequestRetried",
    "RequestTimeoutError",
    "RetryPolicy",
    "RunComfy",
    "RunComfyError",
    "Running",
    "SQLiteJournal",
    "ServerError",
    "Stats",
    "Submission",
    "SubmissionUncertainError",
    "Succeeded",
    "Timeouts",
    "TimerHandle",
    "TransportError",
    "ValidationError",
    "VirtualClock",
]


if TYPE_CHECKING:
    __version__: str


def __getattr__(name: str) -> Any:
    # The version is read lazily from the installed metadata (as stamina does),
    # so importing the package costs no metadata lookup.
    if name == "__version__":
        from ._config import package_version  # noqa: PLC0415

        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
