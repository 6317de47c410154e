"""Retries, written once: pure backoff functions and the one retry loop.

The backoff is a pure function of a frozen :class:`RetryPolicy` (server hints,
``Retry-After``, override it); :func:`retrying` is the loop that every
repeated exchange goes through (the API's calls and downloads alike). It
stops at the policy's attempts *and* at its total time budget
(``RetryPolicy.timeout``), as stamina's ``timeout`` does, so no retry loop can
outlive its caller's patience; all waiting is on the injected clock.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TypeVar

from ._clock import Clock, sleep_until
from ._config import RetryPolicy

T = TypeVar("T")

__all__ = ["backoff_delay", "parse_retry_after", "retry_delay", "retrying"]


def backoff_delay(
    attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Return how long to wait before retry number *attempt* (1 = first retry).

    Exponential growth capped at ``policy.maximum``; the ``jitter`` share of
    it is drawn at random, so clients that failed together spread out.
    """
    exponent = max(0, attempt - 1)
    # Guard the power against overflow for absurd attempt numbers.
    grown = policy.initial * policy.multiplier ** min(exponent, 64)
    base = min(policy.maximum, grown)
    return base * (1.0 - policy.jitter * rand())


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Read a ``Retry-After`` header: delta seconds or an HTTP date.

    Returns seconds from *now* (never negative), or None when the header is
    absent or unreadable, so the caller falls back to its own backoff.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    attempt: int,
    policy: RetryPolicy,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Return the wait before retry *attempt*: the server's hint, else backoff.

    A ``Retry-After`` hint is honoured as given, capped at
    ``policy.max_retry_after`` so a hostile or broken hint cannot stall a batch.
    """
    if retry_after is None:
        return backoff_delay(attempt, policy, rand)
    return min(policy.max_retry_after, max(retry_after, 0.0))


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    clock: Clock,
    retryable: Callable[[Exception], bool],
    hint: Callable[[Exception], float | None] = lambda _: None,
    on_retry: Callable[[int, float, Exception], object] | None = None,
    deadline: float | None = None,
    rand: Callable[[], float] = random.random,
    failed: Exception | None = None,
) -> T:
    """Await *call* until it succeeds, retrying what *retryable* allows.

    Stops, re-raising the last error, when the error is not retryable, when
    ``policy.attempts`` are spent, or when the next wait would end past the
    budget: ``policy.timeout`` seconds from the first try, or *deadline* (on
    *clock*), whichever comes first. *hint* reads a server's wait hint
    (``Retry-After``) from an error; *on_retry* hears of each retry (attempt
    number, wait, error) before the wait. *failed* is the error of a first
    try the caller already made (a fast path that tries once before it
    builds a loop): the loop then starts at its first retry.
    """
    start = clock.now()
    budget = math.inf if policy.timeout is None else start + policy.timeout
    if deadline is not None:
        budget = min(budget, deadline)
    attempt = 0
    while True:
        attempt += 1
        try:
            if failed is None:
                return await call()
            first, failed = failed, None  # the caller's own first try
            raise first  # noqa: TRY301 - the first try's error takes the loop's one path
        except Exception as exc:
            if not retryable(exc) or attempt >= policy.attempts:
                raise
            delay = retry_delay(attempt, policy, hint(exc), rand)
            wake = clock.now() + delay
            if wake > budget:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, exc)
        await sleep_until(clock, wake)
