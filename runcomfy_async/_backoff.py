"""Backoff as pure functions of a frozen policy; server hints override them."""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable
from datetime import datetime, timezone

from ._config import RetryPolicy

__all__ = ["backoff_delay", "parse_retry_after", "retry_delay"]


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
