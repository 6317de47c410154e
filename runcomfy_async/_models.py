"""Value objects: what the API answers.

Answers are a small closed set of status types to ``match`` on::

    match status:
        case Queued(position=p): ...
        case Running(): ...
        case Succeeded(result=r): print(r.video_url)
        case Failed(message=m): ...
        case Cancelled(): ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeAlias

import attrs

__all__ = [
    "Accepted",
    "CancelOutcome",
    "Cancelled",
    "Completed",
    "Failed",
    "JobResult",
    "JobStatus",
    "Pending",
    "Queued",
    "Running",
    "Submission",
    "Succeeded",
]


@attrs.frozen
class Submission:
    """The server's receipt for an accepted (and billed) submit."""

    request_id: str
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None


@attrs.frozen
class Pending:
    """Created locally and not accepted yet: not sent (or on its way), not billed."""


@attrs.frozen
class Accepted:
    """Accepted by the server (so billed, or about to be), not yet seen by a poll."""


@attrs.frozen
class Queued:
    """Accepted and waiting for a slot; ``position`` 0 is next (if reported)."""

    position: int | None = None


@attrs.frozen
class Running:
    """The model is running."""


@attrs.frozen
class Completed:
    """Finished, as ``/status`` says it: the outcome is only on ``/result``.

    ``/status`` shows ``completed`` for failed jobs too, so this is neither a
    success nor a failure until the result is fetched.
    """


@attrs.frozen(kw_only=True)
class JobResult:
    """A finished generation's output.

    Attributes:
        request_id: The job's id.
        video_url: The primary video (the first one), if the output has any.
        video_urls: Every video URL in the output, in order.
        image_urls: Every image URL in the output, in order.
        urls: Every URL found anywhere in the output.
        output: The output object exactly as the server sent it.
        model_id: The model, if the server said.
        created_at: When the server took the job.
        finished_at: When the server finished it.
        cost: The price in USD, when it was asked for.

    """

    request_id: str
    video_urls: tuple[str, ...] = ()
    image_urls: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    output: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    model_id: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    cost: float | None = None

    @property
    def video_url(self) -> str | None:
        """The primary video URL, the first of :attr:`video_urls`."""
        return self.video_urls[0] if self.video_urls else None

    @property
    def run_seconds(self) -> float | None:
        """Server time from acceptance to finish (queue included), if known."""
        if self.created_at is None or self.finished_at is None:
            return None
        seconds = (self.finished_at - self.created_at).total_seconds()
        return seconds if math.isfinite(seconds) and seconds >= 0 else None

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON object (what :meth:`from_json` reads back).

        Times are ISO 8601 strings; the output object is kept as sent.
        """
        return {
            "request_id": self.request_id,
            "model_id": self.model_id,
            "video_url": self.video_url,
            "video_urls": list(self.video_urls),
            "image_urls": list(self.image_urls),
            "urls": list(self.urls),
            "output": dict(self.output),
            "created_at": None if self.created_at is None else self.created_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "cost": self.cost,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobResult:
        """Rebuild a result written by :meth:`to_json`."""

        def when(key: str) -> datetime | None:
            value = data.get(key)
            return None if value is None else datetime.fromisoformat(value)

        cost = data.get("cost")
        return cls(
            request_id=str(data["request_id"]),
            video_urls=tuple(data.get("video_urls") or ()),
            image_urls=tuple(data.get("image_urls") or ()),
            urls=tuple(data.get("urls") or ()),
            output=dict(data.get("output") or {}),
            model_id=data.get("model_id"),
            created_at=when("created_at"),
            finished_at=when("finished_at"),
            cost=None if cost is None else float(cost),
        )


@attrs.frozen
class Succeeded:
    """Finished with an output."""

    result: JobResult


@attrs.frozen(kw_only=True)
class Failed:
    """Finished without an output; ``error`` is the server's opaque value."""

    message: str
    error: Any = None


@attrs.frozen
class Cancelled:
    """Cancelled before it ran."""


JobStatus: TypeAlias = (
    Pending | Accepted | Queued | Running | Completed | Succeeded | Failed | Cancelled
)
"""Every state a job can be seen in."""


@attrs.frozen(kw_only=True)
class CancelOutcome:
    """What a remote cancel achieved.

    Attributes:
        request_id: The job's id.
        cancelled: True only if the server cancelled the job; False means it
            was already running or finished (``not_cancellable``): it runs on
            and is billed.
        status: The job's state as the server reported it.
        outcome: The server's ``outcome`` word, as sent.

    """

    request_id: str
    cancelled: bool
    status: str
    outcome: str | None
