"""What a client tells the outside: events for hooks, counters, and logging.

Hooks are plain callables that receive one event object; a hook that raises
is logged and ignored, so an observer can never break a batch. Logging goes to
the ``runcomfy_async`` logger; a filter on it masks anything that looks like a
bearer token, although no message of ours ever contains one.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeAlias

import attrs

if TYPE_CHECKING:
    from ._job import Job
    from ._models import JobStatus

logger = logging.getLogger("runcomfy_async")

_BEARER = re.compile(r"(Bearer\s+)[^\s'\"]+", re.IGNORECASE)


class RedactingFilter(logging.Filter):
    """Masks ``Bearer <token>`` in every record that passes the logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with tokens masked; keep the record."""
        message = record.getMessage()
        if "earer" in message:
            record.msg = _BEARER.sub(r"\1***", message)
            record.args = None
        return True


logger.addFilter(RedactingFilter())


@attrs.frozen
class JobSubmitted:
    """The server accepted a job (it is now billed)."""

    job: Job


@attrs.frozen
class JobStatusChanged:
    """A poll saw a job in a new state."""

    job: Job
    old: JobStatus
    new: JobStatus


@attrs.frozen
class RequestRetried:
    """An exchange failed in a way that is safe to repeat, and will be repeated."""

    kind: str
    attempt: int
    delay: float
    error: Exception
    request_id: str | None = None


@attrs.frozen
class JobFinished:
    """A job ended: with a result, or with its own error (``job.exception()``)."""

    job: Job


Event: TypeAlias = JobSubmitted | JobStatusChanged | RequestRetried | JobFinished
"""Every event a hook can receive."""

Hook: TypeAlias = Callable[[Event], object]
"""A callable that observes events."""


@attrs.frozen(kw_only=True)
class Stats:
    """A snapshot of what a client has done so far.

    Attributes:
        requests: Exchanges sent, by kind (``submit``, ``status``, ``result``,
            ``cancel``), retries included.
        retries: Exchanges that were repeated.
        rate_limited: 429 answers received.
        jobs: Finished jobs by outcome (``succeeded``, ``failed``,
            ``cancelled``, ``timed_out``, ``error``).
        rate: The throttle's current pace, in requests per second.

    """

    requests: Mapping[str, int]
    retries: int
    rate_limited: int
    jobs: Mapping[str, int]
    rate: float

    @property
    def total_requests(self) -> int:
        """Every exchange sent, of any kind."""
        return sum(self.requests.values())


@attrs.define
class Monitor:
    """The mutable counters and the hook list behind :class:`Stats`."""

    hooks: list[Hook] = attrs.field(factory=list)
    requests: Counter[str] = attrs.field(factory=Counter)
    jobs: Counter[str] = attrs.field(factory=Counter)
    retries: int = 0
    rate_limited: int = 0

    def emit(self, event: Event) -> None:
        """Hand *event* to every hook; a failing hook is logged, not raised."""
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:  # noqa: PERF203 - hooks are user code; isolate each
                logger.exception("event hook %r failed on %s", hook, type(event).__name__)

    def snapshot(self, rate: float) -> Stats:
        """Freeze the counters."""
        return Stats(
            requests=dict(self.requests),
            retries=self.retries,
            rate_limited=self.rate_limited,
            jobs=dict(self.jobs),
            rate=rate,
        )
