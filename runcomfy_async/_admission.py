"""Admission: when an exchange may go out, and how fast, learnt from 429s.

Every exchange of a client asks an :class:`Admission` for a ticket before it
is sent, gives the slot back after, and reports how the server answered. The
engine only knows that protocol; :class:`LocalAdmission`, the default, keeps
everything in this process:

* an **in-flight cap** (``Limits.max_concurrent_requests``);
* a **token bucket** (:class:`TokenBucket`) that hands out send times;
* a **rate controller** (:class:`AIMDController`) that finds and holds the
  server's hidden limit, the way TCP learns a path's capacity.

No rate limit is documented for the Model API, so the controller learns it:

* **slow start**: until the first congestion, the rate grows by one request
  per second for every request that had to wait for the bucket (it doubles
  about once a second while demand exceeds it);
* **multiplicative decrease** on congestion: the rate drops to ``decrease``
  times itself, or at once to just under what the server accepted over the
  last window if that is lower (the limit shows in it), and every sender
  pauses for the server's ``Retry-After``; 429s for requests booked before
  that cut are echoes of the same event, not new ones;
* **additive increase** after that: ``increase`` requests/second more per
  second of rate-bound sending, so the rate creeps back up to the limit.

A 429 is not always congestion: a server may answer a few percent of requests
429 at random, whatever the rate (a busy shard, a CDN hiccup). Cutting and
pausing on each of those collapses throughput (3 % of stray 429s made a batch
24 times slower). So the controller tells them apart:

* **clusters, not single 429s**: a 429 counts as congestion only when the 429s
  among the last window's answers are more than the *background* share (the
  429s that come whatever the rate) explains. An isolated 429 holds back only
  the exchange it answered (its own retry waits ``Retry-After``);
* **a cut is checked**: a hidden limit stops rejecting once the rate is under
  it, stray 429s do not. If the 429s go on at the same share after a cut (a
  sequential probability ratio test on the answers to requests booked after
  it), the cut is undone, the pause lifted, and the share learnt as
  background.

Several processes on one token need no coordinator: each runs this loop on
its own answers, and AIMD converges to fair shares (each cut takes more from
a larger sender, each increase gives all the same).

:class:`TokenBucket` and :class:`AIMDController` are pure (time is passed
in); :class:`LocalAdmission` puts them on a :class:`~._clock.Clock`, which
is the only source of time here, so tests run all of this in virtual time.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import Literal, Protocol

import anyio
import attrs

from ._clock import Clock, RealClock, sleep_until
from ._config import Limits

__all__ = [
    "AIMDController",
    "Admission",
    "ByteBudget",
    "Kind",
    "LocalAdmission",
    "Signal",
    "Throttle",
    "Ticket",
    "TokenBucket",
]

Kind = Literal["submit", "status", "result", "cancel"]
"""What an exchange is for."""

_MIN_DELIVERY_SAMPLES = 20
"""Accepted answers needed before the window's acceptance rate is trusted."""
_MIN_BACKGROUND = 0.002
"""The background share assumed when none was seen: a floor for the check."""
_MAX_BACKGROUND = 0.1
"""Beyond this share, 429s are overload whatever else they look like."""
_STRAY_SHARE = 0.02
"""The smallest share of stray 429s worth telling from congestion."""
_DECIDE = math.log(19.0)
"""The check's evidence bound: 19 to 1 either way (a 5 % error each side)."""
_MIN_CLUSTER = 3
"""The fewest 429s in a window that can be congestion (one or two are luck)."""
_CLUSTER_Z = 3.0
_CLUSTER_MARGIN = 1.5
"""Standard deviations above the background that make a 429 cluster."""
_LEARN = 0.2
"""Weight of one window's share in the background estimate."""


class Signal(enum.Enum):
    """What one answer did to the controller's rate."""

    KEPT = "kept"
    """Nothing changed (a stray 429, an echo of a past event, an unpaced request)."""
    GREW = "grew"
    """The rate went up."""
    CUT = "cut"
    """Congestion: the rate went down."""
    REFUSED = "refused"
    """Congestion, with most answers 429s: the rate went down, and senders
    should pause for Retry-After (the server is refusing, not shaving)."""
    UNDONE = "undone"
    """The last cut was for stray 429s: the rate is back; lift the pause."""


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
class _Check:
    """A cut under test: do the 429s stop now that the rate is lower."""

    since: float
    """Answers to requests booked from here on are the evidence."""
    rate: float
    slow_start: bool
    share: float
    """The 429 share that caused the cut."""
    answers: int = 0
    rejected: int = 0
    first: float = math.inf
    """When the first answer of the evidence came."""

    def evidence(self, background: float) -> float:
        """Log-likelihood ratio: stray 429s (still there) over congestion (gone).

        Stray 429s are taken to go on at a small share: the share that caused
        the cut was picked for being high, and a few answers make it noisy.
        """
        base = max(background, _MIN_BACKGROUND)
        stray = max(2.0 * base, min(self.share / 2.0, _STRAY_SHARE))
        return self.rejected * math.log(stray / base) - self.answers * (stray - base)


@attrs.define
class AIMDController:
    """Additive-increase/multiplicative-decrease on the request rate.

    Pure: every call is given the time. Fed one call per answer: a
    :meth:`on_success` for any answer but a 429, :meth:`on_rate_limited` for
    a 429; each says what it did to :attr:`rate` as a :class:`Signal`.

    Attributes:
        rate: The current pace, requests per second.
        min_rate: The rate it never goes below.
        max_rate: The rate it never goes above.
        increase: Requests/second added per second of rate-bound sending,
            after slow start.
        decrease: A cut's factor.
        slow_start: True until the first congestion.
        window: Seconds of answers that date a cluster and the accepted rate.
        background: The learnt share of 429s that come whatever the rate.
        last_decrease: When the rate was last cut (requests booked before are
            that event's echoes).

    """

    rate: float
    min_rate: float
    max_rate: float
    increase: float = 1.0
    decrease: float = 0.85
    slow_start: bool = True
    window: float = 1.0
    background: float = 0.0
    last_decrease: float = -math.inf
    _answers: deque[tuple[float, bool]] = attrs.field(factory=deque, init=False, repr=False)
    _rejected: int = attrs.field(default=0, init=False, repr=False)
    _check: _Check | None = attrs.field(default=None, init=False, repr=False)
    _learnt_at: float = attrs.field(default=math.nan, init=False, repr=False)
    _learn_answers: int = attrs.field(default=0, init=False, repr=False)
    _learn_rejected: int = attrs.field(default=0, init=False, repr=False)

    def on_success(self, sent_at: float, now: float, *, rate_bound: bool) -> Signal:
        """Feed back an accepted answer; grow if the rate held the request back.

        *sent_at* is when the request was booked, *now* when its answer came.
        """
        self._record(sent_at, now, rejected=False)
        if self._settle_check(now) is Signal.UNDONE:
            return Signal.UNDONE
        if not rate_bound or self.rate >= self.max_rate:
            return Signal.KEPT
        step = 1.0 if self.slow_start else self.increase / self.rate
        self.rate = min(self.max_rate, self.rate + step)
        return Signal.GREW

    def on_rate_limited(self, sent_at: float, now: float) -> Signal:
        """Feed back a 429: cut on congestion, once per event; undo a cut proved wrong."""
        if sent_at < self.last_decrease:
            return Signal.KEPT  # booked before the last cut: that event's echo
        self._record(sent_at, now, rejected=True)
        settled = self._settle_check(now)
        if settled is Signal.UNDONE or not self._is_cluster():
            return settled
        answers = len(self._answers)
        share = self._rejected / answers
        if self._check is not None and share < 1.0 - self.decrease:
            # A cut is under test, and these 429s are its evidence: cutting
            # again would restart the test (stray 429s would then hold the
            # rate down cut after cut). Only a share the last cut could not
            # explain away, a limit far lower, cuts again before the verdict.
            return Signal.KEPT
        target = self.rate * self.decrease
        delivered = self._delivered(now)
        if delivered is not None:
            target = min(target, delivered * self.decrease**0.5)
        before = _Check(now, self.rate, self.slow_start, share)
        if self._check is not None:
            # A cut while the last one is unproven: an undo must go back to
            # before both (stray 429s come in a series, a cut after a cut).
            before.rate = max(before.rate, self._check.rate)
            before.slow_start = before.slow_start or self._check.slow_start
        self.slow_start = False
        self.rate = max(self.min_rate, target)
        # Checkable when a limit would stop rejecting at the new rate: the
        # cut is deeper than the share rejected, or under what the server
        # accepted; and it was not a clear overload.
        checkable = share <= 1.0 - self.decrease or (
            delivered is not None and self.rate < delivered and share <= _MAX_BACKGROUND
        )
        self._check = before if checkable else None
        self._new_epoch(now)
        return Signal.REFUSED if 2 * share >= 1.0 else Signal.CUT

    def _record(self, sent_at: float, now: float, *, rejected: bool) -> None:
        self._answers.append((now, rejected))
        self._rejected += rejected
        self._forget(now)
        if self._check is not None and sent_at >= self._check.since:
            self._check.first = min(self._check.first, now)
            self._check.answers += 1
            self._check.rejected += rejected
        self._learn(now, rejected=rejected)

    def _forget(self, now: float) -> None:
        # A window holds a second of answers, but never fewer than a few
        # dozen: at a low rate, three 429s in five answers prove little.
        answers = self._answers
        while len(answers) > _MIN_DELIVERY_SAMPLES and now - answers[0][0] > self.window:
            self._rejected -= answers.popleft()[1]

    def _learn(self, now: float, *, rejected: bool) -> None:
        # Windows end to end; one with fewer 429s than the background brings
        # it down. Only a check raises it: more 429s in a window may just as
        # well be congestion (another process on the same token, say).
        if math.isnan(self._learnt_at):
            self._learnt_at = now
        if now - self._learnt_at >= self.window and self._learn_answers >= _MIN_DELIVERY_SAMPLES:
            share = self._learn_rejected / self._learn_answers
            self.background -= _LEARN * max(0.0, self.background - share)
            self._learnt_at, self._learn_answers, self._learn_rejected = now, 0, 0
        self._learn_answers += 1
        self._learn_rejected += rejected

    def _new_epoch(self, now: float) -> None:
        self.last_decrease = now
        self._answers.clear()
        self._rejected = 0
        self._learnt_at, self._learn_answers, self._learn_rejected = now, 0, 0

    def _is_cluster(self) -> bool:
        """Say if the window holds more 429s than the background explains."""
        answers, rejected = len(self._answers), self._rejected
        expected = answers * self.background
        # The background is an estimate (and learnt low): a cluster must
        # also stand well clear of it, not just of its noise.
        bound = _CLUSTER_MARGIN * expected + _CLUSTER_Z * math.sqrt(expected) + 1.0
        if rejected < max(_MIN_CLUSTER, bound):
            return False
        # A few answers say little, unless most of them are 429s.
        return answers >= _MIN_DELIVERY_SAMPLES or 2 * rejected >= answers

    def _settle_check(self, now: float) -> Signal:
        check = self._check
        if check is None:
            return Signal.KEPT
        evidence = check.evidence(self.background)
        if evidence <= -_DECIDE:
            self._check = None  # the 429s stopped: it was congestion
            return Signal.KEPT
        # Undone only on a window's evidence with a cluster in it: 429s that
        # go on for a moment after a cut may be other senders' congestion.
        if evidence < _DECIDE or check.rejected < _MIN_CLUSTER or now - check.first < self.window:
            return Signal.KEPT
        # The 429s went on at the lower rate: stray ones. Put the rate back,
        # and expect that share from now on.
        self._check = None
        self.background = max(self.background, min(check.rejected / check.answers, _MAX_BACKGROUND))
        self.rate = max(self.rate, check.rate)
        self.slow_start = check.slow_start
        self._new_epoch(now)
        return Signal.UNDONE

    def _delivered(self, now: float) -> float | None:
        """Return the rate the server accepted over the window, if there is enough history."""
        accepted = [at for at, rejected in self._answers if not rejected]
        if len(accepted) < _MIN_DELIVERY_SAMPLES:
            return None
        span = now - accepted[0]
        return len(accepted) / span if span >= self.window / 4 else None


class Ticket:
    """One exchange's passage through admission; opaque to callers."""

    __slots__ = ("kind", "rate_bound", "sent_at")

    def __init__(self, sent_at: float, rate_bound: bool, kind: Kind = "status") -> None:
        self.kind: Kind = kind
        self.sent_at = sent_at
        """When the send time was booked (a request booked before a cut is
        that cut's echo, whenever it actually leaves)."""
        self.rate_bound = rate_bound
        """Whether the rate, not demand, held this exchange back."""

    def __repr__(self) -> str:
        return f"<Ticket {self.kind} at={self.sent_at:.3f} rate_bound={self.rate_bound}>"


class Admission(Protocol):
    """Decides when each exchange may go out, and learns from the answers.

    Every :meth:`acquire` is paired with one :meth:`release` (whatever
    happens) and, when an answer came, one of :meth:`on_success` or
    :meth:`on_rate_limited`. Shared by every exchange of one client.
    """

    async def acquire(self, kind: Kind) -> Ticket:
        """Wait for a slot and a send time; hold the slot."""
        ...

    def release(self, ticket: Ticket) -> None:
        """Give the slot of *ticket* back."""
        ...

    def on_success(self, ticket: Ticket) -> None:
        """Feed back any answer but a 429."""
        ...

    def on_rate_limited(self, ticket: Ticket, retry_after: float | None) -> None:
        """Feed back a 429 and its ``Retry-After`` (seconds, if any)."""
        ...

    @property
    def rate(self) -> float:
        """The current pace, in requests per second."""
        ...

    @property
    def in_use(self) -> int:
        """Exchanges under way now."""
        ...


class LocalAdmission:
    """Caps concurrent exchanges and paces them, adapting to 429s; in-process.

    Args:
        limits: The in-flight cap and the rate settings.
        clock: Where time comes from (the event loop's by default).

    """

    def __init__(self, limits: Limits, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else RealClock()
        self._capacity = limits.max_concurrent_requests
        self._slots = anyio.Semaphore(self._capacity, fast_acquire=True)
        top = limits.max_rate if limits.max_rate is not None else math.inf
        start = min(limits.initial_rate, top)
        self._aimd = AIMDController(rate=start, min_rate=min(limits.min_rate, start), max_rate=top)
        self._bucket = TokenBucket(rate=start, burst=limits.burst)
        self._paused_until = -math.inf

    def __repr__(self) -> str:
        return f"<LocalAdmission rate={self.rate:.1f}/s in_use={self.in_use}>"

    @property
    def rate(self) -> float:
        """The current pace, in requests per second."""
        return self._aimd.rate

    @property
    def in_use(self) -> int:
        """Exchanges under way now."""
        return self._capacity - self._slots.value

    async def acquire(self, kind: Kind = "status") -> Ticket:
        """Wait for a free slot and a send time; hold the slot.

        Every :meth:`acquire` must be paired with a :meth:`release`. Plain
        methods rather than a context manager: this runs once per request,
        and the generator machinery would cost more than the pacing itself.
        """
        await self._slots.acquire()
        try:
            now = self._clock.now()
            # During a pause, book from its end: senders then leave it one
            # token apart instead of all at once.
            start = max(now, self._paused_until)
            when = start + self._bucket.reserve(start)
            # Stamped when booked, not when sent: a request booked at the old
            # rate and rejected after a cut belongs to the congestion event
            # that caused the cut, and must not cut the rate again.
            ticket = Ticket(now, rate_bound=when > now, kind=kind)
            if when > now:
                await sleep_until(self._clock, when)
        except BaseException:
            self._slots.release()
            raise
        return ticket

    def release(self, ticket: Ticket | None = None) -> None:  # noqa: ARG002 - one slot pool
        """Give the slot taken by :meth:`acquire` back."""
        self._slots.release()

    def on_success(self, ticket: Ticket) -> None:
        """Feed back an exchange the server accepted (any non-429 answer)."""
        now = self._clock.now()
        self._follow(self._aimd.on_success(ticket.sent_at, now, rate_bound=ticket.rate_bound), now)

    def on_rate_limited(self, ticket: Ticket, retry_after: float | None) -> None:
        """Feed back a 429: on congestion, slow down and pause everyone for ``retry_after``.

        A stray 429 changes nothing here: only its own exchange waits (the
        caller's retry honours ``retry_after``).
        """
        now = self._clock.now()
        signal = self._aimd.on_rate_limited(ticket.sent_at, now)
        pausing = signal is Signal.REFUSED or self._paused_until > now
        if pausing and retry_after is not None and retry_after > 0:
            # A cut, or an echo of the event whose pause is still on.
            self._paused_until = max(self._paused_until, now + retry_after)
            self._bucket.empty(now, self._paused_until)  # no burst when the pause ends
        self._follow(signal, now)

    def _follow(self, signal: Signal, now: float) -> None:
        if signal is Signal.KEPT:
            return
        if signal is Signal.UNDONE:
            self._paused_until = -math.inf
            self._bucket.updated = min(self._bucket.updated, now)
        self._bucket.set_rate(self._aimd.rate, now)


Throttle = LocalAdmission
"""The name :class:`LocalAdmission` had before admission was a protocol."""


class ByteBudget:
    """A budget of bytes held at once (submit bodies being built and sent).

    :meth:`acquire` waits until *n* more bytes fit; a request larger than the
    whole budget waits until nothing else is held, then goes alone, so no
    body is ever refused, only delayed.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._used = 0
        self._freed = anyio.Event()

    def __repr__(self) -> str:
        return f"<ByteBudget used={self._used} of {self._capacity}>"

    @property
    def used(self) -> int:
        """Bytes held now."""
        return self._used

    async def acquire(self, n: int) -> int:
        """Wait until *n* bytes fit; return what was taken (to give to :meth:`release`)."""
        n = min(max(n, 0), self._capacity)
        while self._used and self._used + n > self._capacity:
            await self._freed.wait()
        self._used += n
        return n

    def release(self, n: int) -> None:
        """Give back what :meth:`acquire` took."""
        self._used -= n
        self._freed.set()
        self._freed = anyio.Event()
