"""Request pacing: the token bucket, AIMD, and a hidden server limit."""

from __future__ import annotations

import itertools

import anyio
import pytest

from runcomfy_async import FixedInterval, ImageToVideo, Limits, RetryPolicy, RunComfy
from runcomfy_async._ratelimit import AIMDController, Throttle, Ticket, TokenBucket
from runcomfy_async.testing import FakeRunComfy, Faults, Fixed


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_serves_its_burst_then_paces_at_its_rate():
    """A full bucket serves `burst` at once, then one token per 1/rate."""
    bucket = TokenBucket(rate=10.0, burst=3.0)
    waits = [bucket.reserve(0.0) for _ in range(5)]
    assert [0.0, 0.0, 0.0] == waits[:3]
    assert pytest.approx([0.1, 0.2]) == waits[3:]


def test_bucket_refills_with_time_but_never_past_its_burst():
    """Idle time refills the bucket up to its burst, no further."""
    bucket = TokenBucket(rate=10.0, burst=2.0)
    for _ in range(2):
        bucket.reserve(0.0)
    assert 0.0 == bucket.reserve(10.0)
    assert 0.0 == bucket.reserve(10.0)
    assert pytest.approx(0.1) == bucket.reserve(10.0)


def test_rate_change_keeps_what_was_earned():
    """set_rate settles the tokens earned at the old rate first."""
    bucket = TokenBucket(rate=10.0, burst=5.0)
    for _ in range(5):
        bucket.reserve(0.0)
    bucket.set_rate(1.0, 0.2)  # two tokens earned at 10/s
    assert 0.0 == bucket.reserve(0.2)
    assert 0.0 == bucket.reserve(0.2)
    assert pytest.approx(1.0) == bucket.reserve(0.2)


def test_slow_start_grows_by_one_per_rate_bound_success():
    """Before any 429 the rate grows by one per request the rate held back."""
    aimd = AIMDController(rate=10.0, min_rate=1.0, max_rate=1000.0)
    assert not aimd.on_success(rate_bound=False)
    assert 10.0 == aimd.rate
    for _ in range(10):
        aimd.on_success(rate_bound=True)
    assert 20.0 == aimd.rate


def test_a_429_decreases_once_per_congestion_event():
    """429s for requests sent before the last decrease are the same event."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0, decrease=0.5)
    assert aimd.on_rate_limited(sent_at=10.0, now=10.5)
    assert 50.0 == aimd.rate
    assert not aimd.on_rate_limited(sent_at=10.2, now=10.6)  # sent before 10.5
    assert 50.0 == aimd.rate
    assert aimd.on_rate_limited(sent_at=10.7, now=10.8)
    assert 25.0 == aimd.rate
    assert 2 == aimd.decreases


def test_after_a_429_the_rate_recovers_additively():
    """Out of slow start, each rate-bound success adds increase/rate."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0, increase=2.0)
    aimd.on_rate_limited(sent_at=0.0, now=0.0)
    low = aimd.rate
    for _ in range(int(low)):  # about one second's worth of requests
        aimd.on_success(rate_bound=True)
    assert pytest.approx(low + 2.0, rel=0.05) == aimd.rate


def test_the_rate_stays_within_its_bounds():
    """Decreases stop at min_rate and increases at max_rate."""
    aimd = AIMDController(rate=4.0, min_rate=2.0, max_rate=5.0, decrease=0.1)
    aimd.on_rate_limited(sent_at=0.0, now=0.0)
    assert 2.0 == aimd.rate
    aimd.slow_start = True
    for _ in range(20):
        aimd.on_success(rate_bound=True)
    assert 5.0 == aimd.rate


async def test_throttle_pauses_every_sender_for_retry_after():
    """A 429 with Retry-After holds back the next sends until it has passed."""
    clock = Clock()
    throttle = Throttle(Limits(initial_rate=1000.0, burst=100.0), clock=clock)
    throttle.on_rate_limited(Ticket(clock.now, rate_bound=False), retry_after=0.05)
    start = anyio.current_time()
    async with throttle.slot():
        pass
    assert anyio.current_time() - start >= 0.045
    assert throttle.rate < 1000.0


async def test_throttle_caps_concurrent_exchanges():
    """No more slots are held at once than max_concurrent_requests."""
    throttle = Throttle(Limits(max_concurrent_requests=2, initial_rate=10_000.0, burst=100.0))
    peak = 0

    async def hold() -> None:
        nonlocal peak
        async with throttle.slot():
            peak = max(peak, throttle.in_use)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(hold)
    assert 2 == peak
    assert 0 == throttle.in_use


async def test_client_finds_and_holds_a_hidden_rate_limit():
    """Against a hidden limit the client adapts: few 429s, steady progress.

    This asserts the mechanism (rate falls below its start, rejections are a
    small share); the throughput figure itself is the rate_limit benchmark's.
    """
    limit = 300.0
    async with FakeRunComfy(
        time_scale=0.001,
        run_time=Fixed(400.0),
        faults=Faults(rate_limit=limit, rate_burst=5.0, retry_after="none"),
    ) as fake:
        client = RunComfy(
            "test-token",
            base_url=fake.base_url,
            polling=FixedInterval(interval=0.005),
            limits=Limits(initial_rate=2000.0, burst=20.0, max_concurrent_requests=16),
            retry=RetryPolicy(initial=0.002, maximum=0.02, attempts=10),
        )
        async with client:
            jobs = client.submit_many(
                ImageToVideo(prompt=f"take {i}", image_url="https://example.com/a.png")
                for i in range(40)
            )
            outcomes = await client.gather(jobs)
            stats = client.stats
    assert all(o.__class__.__name__ == "JobResult" for o in outcomes)
    # A 429'd submit was not accepted: it is retried, and never doubles a job.
    assert 40 == len(fake.jobs)
    assert 40 == len({job.payload["prompt"] for job in fake.jobs.values()})
    assert fake.count("submit") - 40 <= fake.rejected
    # It found the limit without collapsing below it; the opening flood (40
    # submits sent before the first 429 came back) dominates this short
    # run's rejections, so the steady-state share is the benchmark's to report.
    assert 0.3 * limit < stats.rate < 1.5 * limit
    assert stats.rate_limited / stats.total_requests < 0.25


async def test_senders_leave_a_pause_one_token_apart():
    """After a Retry-After pause, waiting senders are paced, not released at once."""
    throttle = Throttle(Limits(initial_rate=100.0, burst=50.0, max_concurrent_requests=10))
    throttle.on_rate_limited(Ticket(0.0, rate_bound=False), retry_after=0.02)
    rate = throttle.rate
    sent: list[float] = []

    async def send() -> None:
        async with throttle.slot():
            sent.append(anyio.current_time())

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(send)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(gap >= 0.8 / rate for gap in gaps), (gaps, rate)


async def test_a_429_for_a_request_booked_before_a_cut_does_not_cut_again():
    """Tickets are stamped when booked: late 429s of old bookings are one event."""
    clock = Clock()
    throttle = Throttle(Limits(initial_rate=100.0, burst=5.0), clock=clock)
    async with throttle.slot() as early:
        pass
    clock.now += 1.0
    async with throttle.slot() as later:
        pass
    throttle.on_rate_limited(later, retry_after=None)
    after_cut = throttle.rate
    assert after_cut < 100.0
    throttle.on_rate_limited(early, retry_after=None)  # booked before the cut
    assert after_cut == throttle.rate
