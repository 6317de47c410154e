"""Chaos: every fault of the emulator at once, against a batch; the promises hold.

Each run drives a batch of jobs through the emulator with every fault switched
on together (5xx, HTML bodies, dropped connections before and after, 429s with
and without ``Retry-After``, stray 429s, slow answers, malformed bodies and
malformed HTTP, unknown status words, foreign request ids, empty file names,
and in the real-time runs hangs before and after acceptance), plus the
documented drifts, and checks what the library promises:

* none lost: every job ends, in a result or in its own typed error, and what
  it ends with agrees with the server;
* nothing paid twice: no submit key was accepted more than once;
* every uncertain submit is reported: a job the server created is either
  known to its client job by its request id, or that job ends in
  :class:`SubmissionUncertainError` (and those are counted, with how many
  were in fact created);
* nothing hangs: the batch resolves within a bound (on the virtual clock where
  the faults allow one; hangs need real socket timeouts, so those runs use a
  time-scaled emulator, small client timeouts and a real guard);
* nothing is left behind: no task, and no request open on the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import attrs
import pytest

from runcomfy_async import (
    FixedInterval,
    JobFailedError,
    JobResult,
    Limits,
    ModelRequest,
    ProtocolError,
    RetryPolicy,
    RunComfy,
    RunComfyError,
    SubmissionUncertainError,
    Timeouts,
    VirtualClock,
)
from runcomfy_async._admission import LocalAdmission
from runcomfy_async._clock import sleep
from runcomfy_async.testing import FakeRunComfy, Faults, Uniform, submit_key

TOKEN = "test-token"
MODEL = "acme/generic/text-to-video"

HANGS = ("hang", "hang_after_accept")

# Drifts the contract documents, in three sets: each seed runs with one.
DRIFTS: dict[str, dict[str, Any]] = {
    "documented": {},
    "spelling": {
        "submit_202": True,
        "failed_on_status": True,
        "canceled_spelling": True,
        "upper_case_status": True,
    },
    "errors": {
        "result_not_ready": True,
        "errors_as_200": True,
        "status_completed_for_success": False,
    },
}


def payload(run: str, i: int) -> dict[str, object]:
    """The i-th job's payload: distinct, so each job has its own submit key."""
    return {"prompt": f"chaos {run} job {i}", "seed": i}


def requests(run: str, n: int) -> list[ModelRequest]:
    return [ModelRequest(MODEL, payload(run, i)) for i in range(n)]


@attrs.define
class Tally:
    """What a run ended with, counted."""

    jobs: int = 0
    results: int = 0
    errors: Counter[str] = attrs.Factory(Counter)
    uncertain: int = 0
    uncertain_created: int = 0
    created: int = 0


class _CountingPicker:
    """The emulator's fault picker, counting what it picks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def pick(self, kind: str) -> Any:
        fault = self.inner.pick(kind)
        if fault is not None:
            self.seen[fault] += 1
        return fault


def count_faults(fake: FakeRunComfy) -> Counter[str]:
    """Count the faults the emulator picks, so a run can prove it met them.

    The emulator keeps no such count; this wraps its (private) picker.
    """
    picker = _CountingPicker(fake._faults)  # a test's window on the emulator
    fake._faults = picker
    return picker.seen


def check_promises(fake: FakeRunComfy, jobs: list[Any], keys: dict[str, Any]) -> Tally:
    """Assert every promise on a finished run; return what it ended with."""
    tally = Tally(jobs=len(jobs))
    accepted = fake.accepted_submits()
    # None lost: every job ended, in a result or in one of our own errors.
    assert all(job.done() for job in jobs)
    for job in jobs:
        error = job.exception()
        if error is None:
            tally.results += 1
            assert isinstance(job.result(), JobResult)
            server = fake.jobs[job.request_id]
            assert "succeeded" == server.state, job
            continue
        assert isinstance(error, RunComfyError), repr(error)
        # The base class alone is what a worker raises for a bug in the engine.
        assert type(error) is not RunComfyError, repr(error)
        tally.errors[type(error).__name__] += 1
        if isinstance(error, JobFailedError):
            assert "failed" == fake.jobs[job.request_id].state, job
        if isinstance(error, SubmissionUncertainError):
            tally.uncertain += 1
            tally.uncertain_created += submit_key(MODEL, job.request.payload) in accepted
    # Nothing paid twice.
    assert all(count == 1 for count in accepted.values()), accepted
    assert set(accepted) <= set(keys)
    # Every job the server made is known to its client job, or reported uncertain.
    for server in fake.jobs.values():
        tally.created += 1
        job = keys[server.submit_key]
        known = job.request_id == server.request_id
        assert known or isinstance(job.exception(), SubmissionUncertainError), (
            f"{server.request_id} (submit fault {server.submit_fault}) was created, "
            f"but its job ended {job.exception()!r} as {job.request_id!r}"
        )
    return tally


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the loop run (real turns; a virtual clock jumps meanwhile) until *condition()*."""
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - the emulator's state, across tasks
            await anyio.sleep(0.001)


@contextlib.contextmanager
def no_task_left() -> Iterator[None]:
    """Assert that every task started inside the block has ended by its end."""
    before = set(asyncio.all_tasks())
    yield
    left = set(asyncio.all_tasks()) - before
    assert not left, left


async def settle_tasks() -> None:
    # Tasks that were cancelled at close need a few turns to finish.
    for _ in range(20):
        await asyncio.sleep(0)


# -- in virtual time: every fault that a clock can drive --------------------------------


@contextlib.asynccontextmanager
async def virtual_world(
    seed: int, rate: float, drift: dict[str, Any]
) -> AsyncIterator[tuple[VirtualClock, FakeRunComfy]]:
    """An emulator with every fault but hangs, on a virtual clock that jumps when idle."""
    clock = VirtualClock()
    faults = Faults.chaos(rate, exclude=HANGS, base=Faults(slow_seconds=2.0, **drift))
    async with (
        FakeRunComfy(
            clock=clock,
            faults=faults,
            seed=seed,
            run_time=Uniform(10.0, 30.0),
            failure_rate=0.05,
        ) as fake,
        clock.autojumping(),
    ):
        yield clock, fake


def virtual_client(fake: FakeRunComfy, clock: VirtualClock, **kw: Any) -> RunComfy:
    return RunComfy(
        TOKEN,
        base_url=fake.base_url,
        clock=clock,
        polling=FixedInterval(interval=5.0),
        limits=Limits(initial_rate=1000.0, burst=100.0),
        retry=RetryPolicy(initial=0.5, maximum=5.0, timeout=60.0),
        cancel_timeout=5.0,
        model_cache=False,
        **kw,
    )


BOUND = 600.0
"""Virtual seconds a batch may take: run times are 10 to 30 s, retries 60 s at most."""

GUARD = 45.0
"""Real seconds before a batch counts as hung: a guard, not a measurement.

The bound itself is asserted on the virtual clock, after the fact. A timer
set at the bound would not do: while every task waits for a real socket, the
clock jumps to its next timer, and a far-off guard would be that timer.
"""


async def gather_bounded(client: RunComfy, jobs: list[Any], clock: VirtualClock) -> list[Any]:
    """Wait for every job; assert it took at most :data:`BOUND` virtual seconds."""
    start = clock.now()
    with anyio.fail_after(GUARD):
        outcomes = await client.gather(jobs)
    assert clock.now() - start <= BOUND, "the batch did not resolve in time"
    return outcomes


@pytest.mark.parametrize(
    ("seed", "drift"),
    [(1, "documented"), (2, "spelling"), (3, "errors")],
    ids=["seed1-documented", "seed2-spelling", "seed3-errors"],
)
async def test_chaos_batch_in_virtual_time(seed, drift, tmp_path, record_property):
    """150 jobs, every fault but hangs at 15 %: none lost, none paid twice, all reported."""
    n, run = 150, f"v{seed}"
    with no_task_left():
        async with virtual_world(seed, 0.15, DRIFTS[drift]) as (clock, fake):
            seen = count_faults(fake)
            async with virtual_client(fake, clock) as client:
                jobs = client.submit_many(requests(run, n))
                keys = {submit_key(MODEL, payload(run, i)): job for i, job in enumerate(jobs)}
                outcomes = await gather_bounded(client, jobs, clock)
                # Downloads under chaos too: an empty file name, a foreign id,
                # and still every file lands inside its folder. No deadline:
                # the clock would jump to it while a real socket is read.
                saved = [
                    await client.download(outcome, tmp_path, timeout=None)
                    for outcome in outcomes
                    if isinstance(outcome, JobResult)
                ]
            await eventually(lambda: fake.in_flight == 0)
            tally = check_promises(fake, jobs, keys)
        await settle_tasks()
    assert all(path.resolve().parent == tmp_path.resolve() for path in saved)
    assert len(saved) == len(set(saved)) == tally.results
    # The run met the faults it claims to test (not a vacuous pass).
    met = set(seen)
    assert met >= {"server_error", "drop_after", "rate_limited", "stray_429", "malformed"}, seen
    assert len(met) >= 10, seen
    assert tally.results >= n // 2, tally
    record_property("tally", attrs.asdict(tally))


async def test_chaos_uncertain_submits_are_counted():
    """Submits that made a job but lost their answer all end uncertain, and are counted."""
    n, run = 40, "uncertain"
    async with virtual_world(7, 0.0, {}) as (clock, fake):
        lost_answers = ("drop_after", "malformed", "malformed_http")
        for fault in lost_answers:
            fake.inject("submit", fault, times=2)
        fake.inject("submit", "drop_before", times=2)
        async with virtual_client(fake, clock) as client:
            jobs = client.submit_many(requests(run, n))
            keys = {submit_key(MODEL, payload(run, i)): job for i, job in enumerate(jobs)}
            await gather_bounded(client, jobs, clock)
        tally = check_promises(fake, jobs, keys)
    # drop_before left before the server did anything: provably nothing made.
    assert 8 == tally.uncertain
    assert 6 == tally.uncertain_created
    assert n - 2 == tally.created


async def test_chaos_a_429_storm_passes():
    """300 answers in a row are 429s, amid chaos: none lost, none paid twice, then on.

    Submits whose tries all met the storm end in RateLimitedError (not sent,
    not billed); the rest of the batch goes on once it has passed.
    """
    n, run = 100, "storm"
    async with virtual_world(10, 0.1, {}) as (clock, fake):
        seen = count_faults(fake)
        fake.inject("any", "rate_limited", times=300)
        async with virtual_client(fake, clock) as client:
            jobs = client.submit_many(requests(run, n))
            keys = {submit_key(MODEL, payload(run, i)): job for i, job in enumerate(jobs)}
            await gather_bounded(client, jobs, clock)
            rate_limited = client.stats.rate_limited
        tally = check_promises(fake, jobs, keys)
    assert 0 == fake.pending_faults
    assert rate_limited >= 300, rate_limited
    assert seen["rate_limited"] >= 300, seen
    assert tally.results >= n // 2, tally


async def test_chaos_foreign_request_id_on_a_submit_is_uncertain():
    """A submit answered with another job's id made a job: it is reported uncertain."""
    async with virtual_world(8, 0.0, {}) as (clock, fake):
        fake.inject("submit", "foreign_request_id")
        async with virtual_client(fake, clock) as client:
            job = client.submit(ModelRequest(MODEL, payload("foreign", 0)))
            await gather_bounded(client, [job], clock)
        assert 1 == len(fake.jobs)
        made = next(iter(fake.jobs.values()))
        assert "foreign_request_id" == made.submit_fault
        # Either the client knows the job it made, or it says it may exist.
        assert job.request_id == made.request_id or isinstance(
            job.exception(), SubmissionUncertainError
        ), f"the job was created, billed, and reported as {job.exception()!r}"


async def test_chaos_unknown_status_word_ends_the_job_at_once():
    """A well-formed answer with an unknown status word ends the job at once, naming it."""
    async with virtual_world(9, 0.0, {}) as (clock, fake):
        fake.inject("result", "unknown_status")
        async with virtual_client(fake, clock) as client:
            job = client.submit(ModelRequest(MODEL, payload("unknown", 0)))
            await gather_bounded(client, [job], clock)
        assert isinstance(job.exception(), ProtocolError)
        assert "paused" in str(job.exception())
        assert 1 == fake.count("result") + fake.count("status")  # not asked again


async def test_chaos_close_in_the_middle_resolves_everything():
    """Leaving the block mid-batch under chaos: bounded, all resolved, nothing left behind."""
    n, run = 120, "close"
    with no_task_left():
        async with virtual_world(4, 0.15, {}) as (clock, fake):
            async with virtual_client(fake, clock) as client:
                jobs = client.submit_many(requests(run, n))
                keys = {submit_key(MODEL, payload(run, i)): job for i, job in enumerate(jobs)}
                await eventually(lambda: sum(job.done() for job in jobs) >= n // 3)
                closing = clock.now()
            closed = clock.now() - closing
            await eventually(lambda: fake.in_flight == 0)
            check_promises(fake, jobs, keys)
            # Each step of closing is bounded by cancel_timeout (5 s): settling
            # submits on the wire (1.5 x), cancels and last looks (1 x),
            # saving what the poller learnt (1 x).
            assert closed <= 4 * 5.0, closed
        await settle_tasks()


# -- in real time: hangs need real socket timeouts ------------------------------------


@pytest.mark.parametrize("seed", [5, 6])
async def test_chaos_with_hangs_in_real_time(seed, record_property):
    """Every fault, hangs included, at 20 %: small timeouts end each hang; nothing is stuck."""
    n, run = 100, f"r{seed}"
    faults = Faults.chaos(0.2, base=Faults(slow_seconds=50.0))  # slow: past the read timeout
    with no_task_left():
        async with FakeRunComfy(
            faults=faults,
            seed=seed,
            time_scale=0.01,
            run_time=Uniform(10.0, 30.0),
            failure_rate=0.05,
            record=False,
        ) as fake:
            seen = count_faults(fake)
            client = RunComfy(
                TOKEN,
                base_url=fake.base_url,
                polling=FixedInterval(interval=0.05),
                limits=Limits(initial_rate=1000.0, burst=100.0),
                retry=RetryPolicy(initial=0.01, maximum=0.1, timeout=3.0),
                timeouts=Timeouts(connect=1.0, read=0.25, total=1.0),
                cancel_timeout=1.0,
                model_cache=False,
            )
            # A guard against a hang, not a measurement: the batch needs about
            # a second; a stuck job would sit here until pytest's own timeout.
            with anyio.fail_after(40):
                async with client:
                    jobs = client.submit_many(requests(run, n))
                    keys = {submit_key(MODEL, payload(run, i)): job for i, job in enumerate(jobs)}
                    await client.gather(jobs)
                await eventually(lambda: fake.in_flight == 0)
            tally = check_promises(fake, jobs, keys)
        await settle_tasks()
    assert {"hang", "hang_after_accept"} <= set(seen), seen
    record_property("tally", attrs.asdict(tally))


# -- the rate controller under a thin rain of 429s ------------------------------------


async def _paced_work(share: float, seed: int, work: int = 10_000, senders: int = 256) -> float:
    """Virtual seconds for *work* accepted requests when *share* of answers are 429s.

    No limit at all: a 429 is noise. Each sender waits a 429's Retry-After
    (1 s), as the client's retry does; the rest is the admission's pace.
    """
    clock = VirtualClock()
    admission = LocalAdmission(Limits(max_concurrent_requests=32), clock)
    rng = random.Random(seed)
    left = [work]

    async def sender() -> None:
        while left[0] > 0:
            ticket = await admission.acquire("status")
            try:
                rejected = rng.random() < share
                await sleep(clock, 0.02)
            finally:
                admission.release(ticket)
            if rejected:
                admission.on_rate_limited(ticket, 1.0)
                await sleep(clock, 1.0)
            else:
                admission.on_success(ticket)
                left[0] -= 1

    async with clock.autojumping(io=False), anyio.create_task_group() as group:
        for _ in range(senders):
            group.start_soon(sender)
    return clock.now()


@pytest.mark.xfail(
    strict=True,
    reason="0.5 % of answers 429 at random: some cuts' checks conclude congestion (the check "
    "weighs 0.2 % against 2 %), so the cut stands: 1.27 to 1.86 x here (median 1.52; "
    "before a cut under test stopped further cuts: 2 to 7 x)",
)
async def test_chaos_a_thin_rain_of_stray_429s_costs_little():
    """0.5 % random 429s and no limit: the same work within 1.5 x the clean time."""
    clean = await _paced_work(0.0, seed=0)
    ratios = [await _paced_work(0.005, seed) / clean for seed in range(3)]
    assert sorted(ratios)[1] <= 1.5, ratios
    assert max(ratios) <= 2.5, ratios
