"""Time, injectable: what the engine, the rate control and the policies read.

Everything in this library that waits or dates something goes through one
:class:`Clock`: ``now()`` and ``call_at(when, callback)``. Sleeping, waiting
with a deadline and cancel-after scopes are built on those two, so a test can
swap the real clock for a :class:`VirtualClock` and run an hour of polling,
backoff and rate control in milliseconds, exactly and without flakiness on a
loaded machine.

:class:`RealClock` (the default) is the event loop's own monotonic clock and
timer: ``call_at`` is ``loop.call_at``, one heap entry, no task.

:class:`VirtualClock` only moves when told to (:meth:`VirtualClock.advance`),
or, with ``autojump=True``, by itself whenever the event loop has nothing left
to do but wait for the clock (as trio's ``MockClock`` does): then a test reads
like real code and still never waits. The emulator accepts the same clock, so
client and server share one timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ["Clock", "RealClock", "TimerHandle", "VirtualClock"]


class TimerHandle(Protocol):
    """A booked callback that can be called off."""

    def cancel(self) -> None:
        """Call the callback off (harmless once it ran)."""
        ...


class Clock(Protocol):
    """A source of time and timers; everything that waits uses one.

    Implement these two methods to plug in your own; the waiting helpers of
    this library (``sleep``, ``wait`` with a deadline, cancel-after scopes)
    are built on them.
    """

    def now(self) -> float:
        """Seconds on a monotonic scale (its zero means nothing)."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Call *callback* once, in the event loop, when ``now() >= when``."""
        ...


class RealClock:
    """The running event loop's clock and timers (the default)."""

    __slots__ = ("_loop", "_time")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._time: Callable[[], float] | None = None

    def __repr__(self) -> str:
        return "<RealClock>"

    def _running(self) -> asyncio.AbstractEventLoop:
        # Looked up once: asking for the running loop on every call costs more
        # than the call itself, and a client lives in one loop.
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
            self._time = loop.time
        return loop

    def now(self) -> float:
        """Return the event loop's monotonic time."""
        time = self._time
        if time is None or self._loop is None or self._loop.is_closed():
            return self._running().time()
        return time()

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Book *callback* on the event loop's timer heap."""
        return self._running().call_at(when, callback)


class _VirtualTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that moves only when told to, for tests that never really wait.

    >>> clock = VirtualClock()
    >>> clock.now()
    0.0

    ``await clock.advance(60)`` runs every timer due within the next 60
    seconds, in order, letting the event loop settle after each. With
    ``autojump=True``, start :meth:`run_autojump` in a task group (or use
    ``async with clock.autojumping():``): the clock then jumps to the next
    timer whenever the event loop has nothing else to do, so code under test
    runs as written and a minute of backoff passes at once.

    Args:
        start: The time it shows first.

    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._timers: list[tuple[float, int, _VirtualTimer]] = []
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"<VirtualClock now={self._now:.3f} timers={len(self._timers)}>"

    def now(self) -> float:
        """Return the virtual time."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Book *callback* for virtual time *when*."""
        timer = _VirtualTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def next_timer(self) -> float:
        """When the next booked callback is due (``inf`` if none)."""
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else math.inf

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)

    def _fire_due(self) -> bool:
        fired = False
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()
                fired = True
        return fired

    async def settle(self, rounds: int = 20, *, io: bool = True) -> None:
        """Let the event loop run until it has had nothing to do for *rounds* turns.

        Real I/O on loopback (an in-process emulator) completes within a few
        turns; a loop that stays idle that long waits only for the clock.
        With ``io=False`` (code that does no I/O at all) three quiet turns
        suffice and no real time is given to peers: hundreds of times faster.
        """
        loop = asyncio.get_running_loop()
        rounds = rounds if io else 3
        quiet = 0
        while quiet < rounds:
            await asyncio.sleep(0)
            # Our own wake-up is the only ready callback when nothing else runs.
            ready = len(getattr(loop, "_ready", ()))
            quiet = quiet + 1 if ready <= 1 else 0
            if io and quiet == rounds // 2:
                # Give sockets a real chance: a zero-timeout select happens
                # on every turn, but a peer process needs a little real time.
                await asyncio.sleep(0.0005)

    async def advance(self, seconds: float) -> None:
        """Move time forward by *seconds*, firing due timers in order."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: float) -> None:
        """Move time forward to *when*, firing due timers in order."""
        await self.settle()
        while True:
            due = self.next_timer()
            if due > when:
                break
            self._now = max(self._now, due)
            self._fire_due()
            await self.settle()
        self._now = max(self._now, when)

    async def run_autojump(self, *, limit: float = math.inf, io: bool = True) -> None:
        """Jump to the next timer whenever the loop is idle; never returns.

        *limit* stops the jumping at that virtual time (a guard against a
        runaway loop in a test): the task then just waits. ``io=False`` is
        for code that does no I/O (see :meth:`settle`).
        """
        while True:
            await self.settle(io=io)
            due = self.next_timer()
            if not math.isfinite(due) or due > limit:
                await asyncio.sleep(0.001)  # nothing booked yet; look again soon
                continue
            self._now = max(self._now, due)
            self._fire_due()

    @contextlib.asynccontextmanager
    async def autojumping(self, *, limit: float = math.inf, io: bool = True) -> AsyncIterator[None]:
        """Jump automatically for the duration of the block (see :meth:`run_autojump`)."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._autojump_quietly, limit, io)
            try:
                yield
            finally:
                group.cancel_scope.cancel()

    async def _autojump_quietly(self, limit: float, io: bool) -> None:
        await self.run_autojump(limit=limit, io=io)


# -- helpers built on the two primitives -----------------------------------------


async def sleep_until(clock: Clock, when: float) -> None:
    """Sleep until the clock shows *when* (at once if it already does)."""
    if clock.now() >= when:
        await anyio.lowlevel.checkpoint()
        return
    event = anyio.Event()
    handle = clock.call_at(when, event.set)
    try:
        await event.wait()
    finally:
        handle.cancel()


async def sleep(clock: Clock, seconds: float) -> None:
    """Sleep *seconds* on *clock*."""
    await sleep_until(clock, clock.now() + max(0.0, seconds))


@contextlib.contextmanager
def cancel_at(clock: Clock, when: float) -> Iterator[anyio.CancelScope]:
    """Open a cancel scope that is cancelled when the clock shows *when*.

    Like :func:`anyio.move_on_after`: the block is left quietly, and
    ``scope.cancelled_caught`` says whether the deadline cut it short.
    """
    scope = anyio.CancelScope()
    handle = clock.call_at(when, scope.cancel) if math.isfinite(when) else None
    try:
        with scope:
            yield scope
    finally:
        if handle is not None:
            handle.cancel()


def cancel_after(
    clock: Clock, seconds: float | None
) -> contextlib.AbstractContextManager[anyio.CancelScope]:
    """Open a cancel scope cut short after *seconds* on *clock* (None: never)."""
    when = math.inf if seconds is None else clock.now() + max(0.0, seconds)
    return cancel_at(clock, when)
