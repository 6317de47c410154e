"""Request pacing that finds and holds the server's hidden rate limit.

No rate limit is documented for the Model API, so the client learns it the
way TCP learns a path's capacity:

* **slow start**: until the first 429, the rate grows by one request per
  second for every request that had to wait for the bucket (it doubles about
  once a second while demand exceeds it);
* **multiplicative decrease** on a 429: the rate drops to ``decrease`` times
  itself (or at once to what the server accepted over the last second, if
  that is lower: the server's limit shows in it), once per congestion event
  (429s for requests sent before the last decrease are the same event, not
  new ones), and every sender pauses for the server's ``Retry-After``;
* **additive increase** after that: ``increase`` requests/second more per
  second of rate-bound sending, so the rate creeps back up to the limit.

A cut lands near the limit (the delivered rate), and an increase of one
request/second per second makes each cycle long, so a server that answers
every overload with a whole-second ``Retry-After`` pause costs little: the
rate benchmark holds about 90-96% of a hidden limit with under 0.1% of
requests rejected. :class:`TokenBucket` and :class:`AIMDController` are
pure (time is passed in); :class:`Throttle` puts them on the event loop.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import attrs

from ._config import Limits

__all__ = ["AIMDController", "Throttle", "TokenBucket"]

_DELIVERY_WINDOW = 1.0
"""Seconds of accepted requests that date the server's recent acceptance rate."""
_DELIVERY_MIN_SAMPLES = 20


@attrs.define
class TokenBucket:
    """A token bucket that hands out send times (reservations).

    ``reserve(now)`` books the next free token and returns how long the caller
    must wait for it; tokens may go negative, which is how waiting callers
    queue up fairly without a lock.
    """

    rate: float
    burst: float
    tokens: float = attrs.field(default=math.nan)
    updated: float = attrs.field(default=math.nan)

    def reserve(self, now: float) -> float:
        """Book one token; return the wait in seconds (0 when one is ready)."""
        if math.isnan(self.updated):
            self.tokens, self.updated = self.burst, now
        elif now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def empty(self, now: float, until: float) -> None:
        """Spend what was saved up and earn nothing before *until* (a pause)."""
        self.reserve(now)
        self.tokens = min(self.tokens + 1.0, 0.0)
        self.updated = max(self.updated, until)

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate, settling what was earned at the old rate first."""
        self.reserve(now)
        self.tokens += 1.0  # undo the booking reserve() made
        self.rate = rate


@attrs.define
class AIMDController:
    """Additive-increase/multiplicative-decrease on the request rate."""

    rate: float
    min_rate: float
    max_rate: float
    increase: float = 1.0
    decrease: float = 0.85
    slow_start: bool = True
    last_decrease: float = -math.inf
    decreases: int = 0

    def on_success(self, rate_bound: bool) -> bool:
        """Grow after a request that the rate held back; say if it changed."""
        if not rate_bound or self.rate >= self.max_rate:
            return False
        step = 1.0 if self.slow_start else self.increase / self.rate
        self.rate = min(self.max_rate, self.rate + step)
        return True

    def on_rate_limited(self, sent_at: float, now: float, delivered: float | None = None) -> bool:
        """Shrink on a 429, once per congestion event; say if it changed.

        *delivered* is the rate the server accepted lately, if known: a 429
        means that is about its limit, so the rate drops straight to it (a
        start far above the limit then costs one event, not a dozen).
        """
        if sent_at < self.last_decrease:
            return False  # sent before we last slowed down: the same event
        self.slow_start = False
        target = self.rate * self.decrease
        if delivered is not None:
            target = min(target, delivered * self.decrease**0.5)
        self.rate = max(self.min_rate, target)
        self.last_decrease = now
        self.decreases += 1
        return True


class Ticket:
    """One exchange's passage through the throttle."""

    __slots__ = ("rate_bound", "sent_at")

    def __init__(self, sent_at: float, rate_bound: bool) -> None:
        self.sent_at = sent_at
        self.rate_bound = rate_bound


class Throttle:
    """Caps concurrent exchanges and paces them, adapting to 429s.

    Shared by every exchange of one client: submits, polls, cancels and the
    low-level calls alike.
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._capacity = limits.max_concurrent_requests
        self._slots = anyio.Semaphore(self._capacity, fast_acquire=True)
        top = limits.max_rate if limits.max_rate is not None else math.inf
        start = min(limits.initial_rate, top)
        self._aimd = AIMDController(rate=start, min_rate=min(limits.min_rate, start), max_rate=top)
        self._bucket = TokenBucket(rate=start, burst=limits.burst)
        self._paused_until = -math.inf
        self._accepted: deque[float] = deque()

    def __repr__(self) -> str:
        return f"<Throttle rate={self.rate:.1f}/s in_use={self.in_use}>"

    @property
    def rate(self) -> float:
        """The current pace, in requests per second."""
        return self._aimd.rate

    @property
    def in_use(self) -> int:
        """Exchanges under way now."""
        return self._capacity - self._slots.value

    async def acquire(self) -> Ticket:
        """Wait for a free connection slot and a send time; hold the slot.

        Every :meth:`acquire` must be paired with a :meth:`release` (or use
        :meth:`slot`). Plain methods rather than a context manager: this runs
        once per request, and the generator machinery would cost more than
        the pacing itself.
        """
        await self._slots.acquire()
        try:
            now = self._clock()
            # During a pause, book from its end: senders then leave it one
            # token apart instead of all at once.
            start = max(now, self._paused_until)
            wait = start - now + self._bucket.reserve(start)
            # Stamped when booked, not when sent: a request booked at the old
            # rate and rejected after a cut belongs to the congestion event
            # that caused the cut, and must not cut the rate again.
            ticket = Ticket(now, rate_bound=wait > 0)
            if wait > 0:
                await anyio.sleep(wait)
        except BaseException:
            self._slots.release()
            raise
        return ticket

    def release(self) -> None:
        """Give the slot taken by :meth:`acquire` back."""
        self._slots.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Ticket]:
        """Hold a slot for the block (:meth:`acquire` and :meth:`release`)."""
        ticket = await self.acquire()
        try:
            yield ticket
        finally:
            self.release()

    def on_success(self, ticket: Ticket) -> None:
        """Feed back an exchange the server accepted (any non-429 answer)."""
        now = self._clock()
        self._accepted.append(now)
        while now - self._accepted[0] > _DELIVERY_WINDOW:
            self._accepted.popleft()
        if self._aimd.on_success(ticket.rate_bound):
            self._bucket.set_rate(self._aimd.rate, now)

    def _delivered(self, now: float) -> float | None:
        """Return the rate the server accepted lately, if there is enough history."""
        while self._accepted and now - self._accepted[0] > _DELIVERY_WINDOW:
            self._accepted.popleft()
        if len(self._accepted) < _DELIVERY_MIN_SAMPLES:
            return None
        span = now - self._accepted[0]
        return len(self._accepted) / span if span >= _DELIVERY_WINDOW / 4 else None

    def on_rate_limited(self, ticket: Ticket, retry_after: float | None) -> None:
        """Feed back a 429: slow down, and pause everyone for ``retry_after``."""
        now = self._clock()
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + retry_after)
            self._bucket.empty(now, self._paused_until)  # no burst when the pause ends
        if self._aimd.on_rate_limited(ticket.sent_at, now, self._delivered(now)):
            self._bucket.set_rate(self._aimd.rate, now)
