"""The injectable clock: virtual time that jumps, and the helpers built on two primitives."""

from __future__ import annotations

import anyio
import pytest

from runcomfy_async import RealClock, VirtualClock
from runcomfy_async._clock import cancel_after, cancel_at, sleep, sleep_until


async def test_autojump_passes_an_hour_at_once():
    """Under autojumping, sleeps and cancel-after scopes run in virtual time, exactly."""
    clock = VirtualClock()
    async with clock.autojumping():
        await sleep(clock, 3600)
        assert 3600 == clock.now()
        with cancel_after(clock, 5) as scope:
            await sleep(clock, 100)
        assert scope.cancelled_caught
        assert 3605 == clock.now()


async def test_advance_fires_timers_in_order():
    """advance() runs every timer due within the span, in time order, and stops there."""
    clock = VirtualClock(start=10.0)
    fired: list[tuple[str, float]] = []
    for name, when in [("b", 12.0), ("a", 11.0), ("c", 20.0)]:
        clock.call_at(when, lambda name=name: fired.append((name, clock.now())))
    cancelled = clock.call_at(11.5, lambda: fired.append(("x", clock.now())))
    cancelled.cancel()
    await clock.advance(5)
    assert [("a", 11.0), ("b", 12.0)] == fired
    assert 15.0 == clock.now()
    assert 20.0 == clock.next_timer()


async def test_a_clock_never_goes_back():
    """A negative advance is refused."""
    with pytest.raises(ValueError, match="back"):
        await VirtualClock().advance(-1)


async def test_sleep_until_the_past_only_checkpoints():
    """Sleeping until a time already passed returns at once."""
    clock = VirtualClock(start=50.0)
    await sleep_until(clock, 10.0)
    assert 50.0 == clock.now()


async def test_cancel_at_infinity_never_fires():
    """A deadline at infinity books no timer and never cancels."""
    clock = VirtualClock()
    with cancel_at(clock, float("inf")) as scope:
        await anyio.lowlevel.checkpoint()
    assert not scope.cancelled_caught
    assert float("inf") == clock.next_timer()


async def test_the_real_clock_is_the_loops():
    """RealClock reads and books on the running loop."""
    clock = RealClock()
    event = anyio.Event()
    start = clock.now()
    clock.call_at(start, event.set)
    with anyio.fail_after(5):
        await event.wait()
    assert clock.now() >= start
