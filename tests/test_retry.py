"""Backoff and Retry-After as pure functions, and the one retry loop, in virtual time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from runcomfy_async import RetryPolicy, VirtualClock
from runcomfy_async._retry import backoff_delay, parse_retry_after, retry_delay, retrying

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
NO_JITTER = RetryPolicy(initial=0.5, maximum=30.0, multiplier=2.0, jitter=0.0)


def one():
    return 1.0


def zero():
    return 0.0


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        pytest.param(1, 0.5, id="first"),
        pytest.param(2, 1.0, id="second"),
        pytest.param(3, 2.0, id="third"),
        pytest.param(6, 16.0, id="sixth"),
        pytest.param(7, 30.0, id="capped"),
        pytest.param(50, 30.0, id="far-capped"),
        pytest.param(0, 0.5, id="zero-is-first"),
    ],
)
def test_backoff_grows_then_caps(attempt, expected):
    """Backoff doubles from ``initial`` and stops at ``maximum``."""
    assert expected == backoff_delay(attempt, NO_JITTER, rand=one)


def test_backoff_multiplier():
    """The multiplier sets the growth."""
    policy = RetryPolicy(initial=1.0, maximum=100.0, multiplier=3.0, jitter=0.0)

    assert [1.0, 3.0, 9.0, 27.0, 81.0, 100.0] == [
        backoff_delay(n, policy, rand=one) for n in range(1, 7)
    ]


def test_backoff_absurd_attempt_does_not_overflow():
    """A huge attempt number is capped, not an OverflowError."""
    policy = RetryPolicy(initial=1.0, maximum=60.0, multiplier=10.0, jitter=0.0)

    assert 60.0 == backoff_delay(10**9, policy)


@pytest.mark.parametrize(
    ("jitter", "rand", "expected"),
    [
        pytest.param(1.0, zero, 8.0, id="full-jitter-low-draw"),
        pytest.param(1.0, lambda: 0.75, 2.0, id="full-jitter-mid-draw"),
        pytest.param(1.0, lambda: 0.999, 0.008, id="full-jitter-high-draw"),
        pytest.param(0.5, zero, 8.0, id="half-jitter-low-draw"),
        pytest.param(0.5, lambda: 0.5, 6.0, id="half-jitter-mid-draw"),
        pytest.param(0.5, one, 4.0, id="half-jitter-top-draw"),
        pytest.param(0.0, lambda: 0.9, 8.0, id="no-jitter"),
    ],
)
def test_backoff_jitter(jitter, rand, expected):
    """The ``jitter`` share of the backoff is taken off at random."""
    policy = RetryPolicy(initial=1.0, maximum=30.0, jitter=jitter)

    assert expected == pytest.approx(backoff_delay(4, policy, rand=rand))


@pytest.mark.parametrize("jitter", [0.0, 0.25, 1.0])
def test_backoff_jitter_bounds(jitter):
    """Any draw in [0, 1) keeps the delay within ((1 - jitter) * base, base]."""
    policy = RetryPolicy(initial=0.5, maximum=4.0, jitter=jitter)
    draws = [i / 100 for i in range(100)]

    for attempt in range(1, 8):
        base = min(4.0, 0.5 * 2 ** (attempt - 1))
        for draw in draws:
            delay = backoff_delay(attempt, policy, rand=lambda d=draw: d)
            assert (1 - jitter) * base <= delay <= base


def test_backoff_default_randomness_in_bounds():
    """Without an injected ``rand`` the delay still stays in bounds."""
    policy = RetryPolicy(initial=1.0, maximum=8.0)

    delays = [backoff_delay(3, policy) for _ in range(200)]

    assert all(0.0 < d <= 4.0 for d in delays)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 2.5 ", 2.5, id="fraction-padded"),
        pytest.param("0.001", 0.001, id="milliseconds"),
        pytest.param("-3", 0.0, id="negative"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("12s", None, id="unit"),
        pytest.param("inf", None, id="infinite"),
        pytest.param("nan", None, id="nan"),
        pytest.param("1e999", None, id="overflow"),
        pytest.param("Mon, 99 Foo 2025 99:99:99 GMT", None, id="bad-date"),
    ],
)
def test_parse_retry_after(value, expected):
    """Retry-After in seconds is read; garbage gives None (use the backoff)."""
    assert expected == parse_retry_after(value, now=NOW)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        pytest.param(timedelta(seconds=30), 30.0, id="future"),
        pytest.param(timedelta(hours=1), 3600.0, id="an-hour"),
        pytest.param(timedelta(seconds=-30), 0.0, id="past"),
    ],
)
def test_parse_retry_after_http_date(delta, expected):
    """An HTTP date gives the seconds from now, never negative."""
    value = format_datetime(NOW + delta, usegmt=True)

    assert expected == parse_retry_after(value, now=NOW)


def test_parse_retry_after_date_without_zone_is_utc():
    """A date with ``-0000`` (no zone information) is taken as UTC."""
    assert 10.0 == parse_retry_after("Sun, 01 Jun 2025 12:00:10 -0000", now=NOW)


def test_parse_retry_after_date_uses_the_real_clock_by_default():
    """Without ``now`` the date is measured from the current time."""
    value = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)

    seconds = parse_retry_after(value)

    assert seconds is not None
    assert 58.0 <= seconds <= 60.0


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        pytest.param(5.0, 5.0, id="honoured"),
        pytest.param(0.0, 0.0, id="zero"),
        pytest.param(-2.0, 0.0, id="negative"),
        pytest.param(500.0, 120.0, id="capped"),
    ],
)
def test_retry_delay_honours_the_hint(hint, expected):
    """A Retry-After hint overrides the backoff, capped at ``max_retry_after``."""
    policy = RetryPolicy(initial=0.5, maximum=1.0, max_retry_after=120.0)

    assert expected == retry_delay(3, policy, hint, rand=one)


def test_retry_delay_hint_may_exceed_the_backoff_maximum():
    """The server's hint wins over ``maximum``; only ``max_retry_after`` caps it."""
    policy = RetryPolicy(maximum=0.01, max_retry_after=60.0)

    assert 30.0 == retry_delay(1, policy, 30.0)


def test_retry_delay_without_hint_is_backoff():
    """Without a hint the backoff applies."""
    assert backoff_delay(3, NO_JITTER, rand=zero) == retry_delay(3, NO_JITTER, None, rand=zero)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"attempts": 0}, id="no-attempts"),
        pytest.param({"initial": -1.0}, id="negative-initial"),
        pytest.param({"maximum": -1.0}, id="negative-maximum"),
        pytest.param({"multiplier": 0.5}, id="shrinking"),
        pytest.param({"jitter": 1.5}, id="jitter-over-1"),
        pytest.param({"jitter": -0.1}, id="negative-jitter"),
        pytest.param({"max_retry_after": -1.0}, id="negative-max-retry-after"),
    ],
)
def test_retry_policy_refuses_nonsense(settings):
    """A RetryPolicy cannot be built with impossible settings."""
    with pytest.raises(ValueError):
        RetryPolicy(**settings)


def test_retry_policy_defaults():
    """The defaults: six tries, 0.5 s doubling to 30 s, full jitter, hints up to 2 min."""
    assert (
        RetryPolicy(
            attempts=6, initial=0.5, maximum=30.0, multiplier=2.0, jitter=1.0, max_retry_after=120.0
        )
        == RetryPolicy()
    )


# -- the one retry loop, in virtual time ------------------------------------------


class FlakyError(Exception):
    pass


class FatalError(Exception):
    pass


def failing(times: int, error: type[Exception] = FlakyError):
    calls = []

    async def call():
        calls.append(None)
        if len(calls) <= times:
            raise error
        return len(calls)

    return call, calls


async def run_retrying(call, policy, **kw):
    clock = VirtualClock()
    async with clock.autojumping(io=False):
        try:
            value = await retrying(
                call,
                policy=policy,
                clock=clock,
                retryable=lambda e: isinstance(e, FlakyError),
                rand=zero,
                **kw,
            )
        except Exception as exc:
            return exc, clock.now()
    return value, clock.now()


async def test_retrying_succeeds_after_backoffs():
    """Three failures, then success: waits 0.5 + 1 + 2 s of backoff."""
    call, _ = failing(3)
    value, elapsed = await run_retrying(call, NO_JITTER)
    assert 4 == value
    assert 3.5 == elapsed


async def test_retrying_raises_at_once_what_is_not_retryable():
    """An error that is not retryable is raised on the first try."""
    call, calls = failing(1, FatalError)
    error, elapsed = await run_retrying(call, NO_JITTER)
    assert isinstance(error, FatalError)
    assert (1, 0.0) == (len(calls), elapsed)


async def test_retrying_stops_at_the_attempts():
    """Attempts count the first try: three in all, then the last error."""
    call, calls = failing(10)
    error, _ = await run_retrying(call, RetryPolicy(attempts=3, jitter=0.0))
    assert isinstance(error, FlakyError)
    assert 3 == len(calls)


async def test_retrying_stops_at_the_time_budget():
    """No wait may end past the budget: the loop gives up before it would."""
    call, calls = failing(100)
    policy = RetryPolicy(attempts=100, initial=1.0, maximum=8.0, jitter=0.0, timeout=20.0)
    error, elapsed = await run_retrying(call, policy)
    assert isinstance(error, FlakyError)
    # Waits 1, 2, 4, 8 (15 s); the next (8 s) would end at 23 s > 20 s.
    assert 15.0 == elapsed
    assert 5 == len(calls)


async def test_retrying_honours_a_deadline_and_a_hint():
    """A caller's deadline bounds the loop too; a server hint replaces backoff."""
    call, calls = failing(100)
    policy = RetryPolicy(attempts=100, jitter=0.0, timeout=None)
    error, elapsed = await run_retrying(call, policy, deadline=10.0, hint=lambda _: 3.0)
    assert isinstance(error, FlakyError)
    assert 9.0 == elapsed
    assert 4 == len(calls)
