"""Leaving ``async with`` in every way, in virtual time: bounded, billed honestly, all resolved.

Client and emulator share one :class:`VirtualClock` that jumps whenever the
event loop is idle, so minutes of queueing, backoff and ``Retry-After`` pass
at once and every bound below is asserted exactly, on the virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest

from runcomfy_async import (
    Accepted,
    ImageToVideo,
    JobCancelledError,
    JobRunningOnError,
    JobSubmitted,
    JobTimeoutError,
    Limits,
    NotFoundError,
    Pending,
    Queued,
    RetryPolicy,
    RunComfy,
    Running,
    SQLiteJournal,
    SubmissionUncertainError,
    Timeouts,
    VirtualClock,
)
from runcomfy_async.testing import FakeRunComfy, Faults, Fixed, sample_png

TOKEN = "test-token"
IMAGE = "https://example.com/first-frame.png"


def request(i: int = 0) -> ImageToVideo:
    return ImageToVideo(prompt=f"a cat walks, take {i}", image_url=IMAGE)


@contextlib.asynccontextmanager
async def world(**fake_options) -> AsyncIterator[tuple[VirtualClock, FakeRunComfy]]:
    """An emulator on a virtual clock that jumps whenever the loop is idle."""
    clock = VirtualClock()
    fake_options.setdefault("run_time", Fixed(60.0))
    async with FakeRunComfy(clock=clock, **fake_options) as fake, clock.autojumping():
        yield clock, fake


def client_for(fake: FakeRunComfy, clock: VirtualClock, **kw) -> RunComfy:
    kw.setdefault("limits", Limits(initial_rate=10_000.0, burst=1_000.0))
    kw.setdefault("retry", RetryPolicy(initial=0.5, maximum=5.0, attempts=6, timeout=120.0))
    return RunComfy(TOKEN, base_url=fake.base_url, clock=clock, **kw)


async def eventually(condition) -> None:
    """Let the loop run (real turns; a virtual clock jumps meanwhile) until *condition()*."""
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - conditions on two processes' state
            await anyio.sleep(0.001)


def queued_on_server(fake: FakeRunComfy) -> int:
    return sum(1 for job in fake.jobs.values() if job.state == "in_queue")


# -- defect 1: a cancelled host still closes -----------------------------------------


async def _hold(client: RunComfy, jobs: list, clock: VirtualClock, ready: anyio.Event) -> None:
    async with client:
        jobs.extend(client.submit_many(request(i) for i in range(100)))
        await eventually(lambda: all(isinstance(job.state, (Queued, Running)) for job in jobs))
        ready.set()
        await anyio.sleep_forever()


@pytest.mark.parametrize("how", ["scope", "task_cancel", "twice", "asyncio_timeout"])
async def test_cancelling_the_host_task_still_closes(how):
    """However the host is cancelled, queued jobs are cancelled remotely and every Job resolves."""
    async with world(slots=2, run_time=Fixed(600.0)) as (clock, fake):
        client = client_for(fake, clock)
        jobs: list = []
        ready = anyio.Event()
        if how == "scope":
            async with anyio.create_task_group() as group:
                group.start_soon(_hold, client, jobs, clock, ready)
                await ready.wait()
                group.cancel_scope.cancel()
        elif how == "asyncio_timeout":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None) as timeout:
                    holder = asyncio.ensure_future(_hold(client, jobs, clock, ready))
                    await ready.wait()
                    timeout.reschedule(asyncio.get_running_loop().time())
                    await holder
        else:
            holder = asyncio.ensure_future(_hold(client, jobs, clock, ready))
            await ready.wait()
            holder.cancel()
            if how == "twice":
                await asyncio.sleep(0)
                holder.cancel()
            with pytest.raises(asyncio.CancelledError):
                await holder
        closed_at = clock.now()
        assert 100 == len(jobs)
        assert all(job.done() for job in jobs)
        assert 0 == queued_on_server(fake)
        assert 98 == fake.count("cancel")
        running = [job for job in jobs if isinstance(job.exception(), JobRunningOnError)]
        assert 2 == len(running)
        assert {job.request_id for job in running} == {job.request_id for job in client.running_on}
        assert all(job.billed for job in running)
        assert 98 == sum(1 for job in jobs if job.billed is False)
        assert closed_at < 600.0  # the running jobs were not waited for


# -- defect 2: closing never creates a new billed job, and is bounded ------------------


async def test_close_drops_a_submit_that_is_backing_off_from_429():
    """A submit answered 429 is not accepted: leaving drops it at once, unsent and unbilled."""
    async with world() as (clock, fake):
        fake.inject("submit", "rate_limited", times=4)
        async with client_for(fake, clock) as client:
            job = client.submit(request())
            await eventually(lambda: fake.count("submit") != 0)
            start = clock.now()
        assert clock.now() - start < 2.0
        assert 0 == len(fake.jobs)  # no fifth submit created a job
        with pytest.raises(JobCancelledError, match="nothing was billed"):
            job.result()
        assert job.billed is False


async def test_close_does_not_wait_out_a_long_retry_after():
    """Retry-After: 30 on every submit: leaving returns at once, not after 150 s."""
    async with world(faults=Faults(rate_limited_rate=1.0)) as (clock, fake):
        async with client_for(fake, clock) as client:
            job = client.submit(request())
            await eventually(lambda: fake.count("submit") != 0)
            start = clock.now()
        assert clock.now() - start < 1.0
        assert job.done()
        assert job.billed is False


async def test_close_is_bounded_against_a_submit_that_never_answers():
    """A submit on the wire is awaited at most cancel_timeout, then reported uncertain."""
    async with world() as (clock, fake):
        fake.inject("submit", "hang_after_accept")
        async with client_for(
            fake, clock, cancel_timeout=5.0, timeouts=Timeouts(read=3600, total=3600)
        ) as client:
            job = client.submit(request())
            await eventually(lambda: fake.count("submit") != 0)
            start = clock.now()
        assert clock.now() - start <= 5.0 + 2.5 + 0.1
        with pytest.raises(SubmissionUncertainError):
            job.result()
        assert job.billed is None  # a job was in fact created: nobody can tell here
        assert 1 == len(fake.jobs)


async def test_a_deadline_drops_a_submit_that_is_backing_off():
    """A job deadline does not wait for a 429 retry loop: the job ends unsent."""
    async with world(faults=Faults(rate_limited_rate=1.0)) as (clock, fake):
        async with client_for(fake, clock) as client:
            job = client.submit(request(), timeout=5.0)
            with pytest.raises(JobTimeoutError, match="nothing was billed"):
                await job
            assert clock.now() < 6.0
    assert 0 == len(fake.jobs)


# -- defect 3: closing never raises, and resolves everything -------------------------


async def test_jobs_that_finished_unseen_are_collected_at_close():
    """Twenty jobs finished but not yet polled: close collects each, raises nothing."""
    async with world(run_time=Fixed(10.0)) as (clock, fake):
        async with client_for(fake, clock) as client:
            jobs = client.submit_many(request(i) for i in range(20))
            await eventually(lambda: all(job.request_id for job in jobs))
            # Every job finishes on the server; leave before the next polls.
            fake_finish = max(job.created for job in fake.jobs.values()) + 10.0
            await eventually(lambda: clock.now() >= fake_finish)
        assert all(job.done() for job in jobs)
        assert all(job.outcome is not None for job in jobs)
        assert client.running_on == [] or all(j.billed for j in client.running_on)


async def test_a_late_accept_during_close_raises_nothing():
    """A submit accepted while closing, whose job then finishes: no ExceptionGroup."""
    async with world(run_time=Fixed(1.0)) as (clock, fake):
        fake.inject("submit", "rate_limited", times=1)
        async with client_for(fake, clock) as client:
            jobs = client.submit_many(request(i) for i in range(5))
            await anyio.sleep(0.005)
        assert all(job.done() for job in jobs)


# -- defect 5: an uncertain submit does not serialise the batch ----------------------


async def test_an_uncertain_first_submit_ends_the_probe():
    """After an uncertain first submit, the rest go out together, not one at a time."""
    # A little real latency makes overlapping submits visible to the server.
    async with world(faults=Faults(drop_after_rate=1.0), latency=0.05) as (clock, fake):
        async with client_for(fake, clock) as client:
            outcomes = await client.run([request(i) for i in range(8)])
        assert all(isinstance(o, SubmissionUncertainError) for o in outcomes)
        assert fake.peak_concurrency >= 4


# -- defect 6: Pending (not billed) apart from Accepted (billed, not yet polled) -------


async def test_accepted_is_a_state_of_its_own():
    """At acceptance a job is Accepted, not Pending; before it, Pending."""
    seen = []

    def hook(event):
        if isinstance(event, JobSubmitted):
            seen.append(type(event.job.state))

    async with world() as (clock, fake), client_for(fake, clock, hooks=[hook]) as client:
        job = client.submit(request())
        assert isinstance(job.state, Pending)
        await job
    assert [Accepted] == seen


# -- defect 9: paths that were untested ---------------------------------------------


async def test_cancel_succeeds_on_a_queued_job():
    """job.cancel() on a queued job cancels it remotely: not billed."""
    async with world(slots=1, run_time=Fixed(600.0)) as (clock, fake):
        async with client_for(fake, clock) as client:
            first, second = client.submit_many([request(0), request(1)])
            await eventually(lambda: isinstance(second.state, Queued))
            outcome = await second.cancel()
            assert outcome is not None
            assert outcome.cancelled
            with pytest.raises(JobCancelledError):
                await second
            assert second.billed is False
            await first.cancel()
    assert fake.jobs[second.request_id].cancelled


async def test_cancel_while_the_submit_is_on_the_wire():
    """Cancelling a job whose submit is on the wire cancels it once the id is known.

    Real time (the emulator's latency is a real sleep), asserting no timing.
    """
    async with FakeRunComfy(time_scale=0.001, slots=1, run_time=Fixed(60_000.0)) as fake:
        async with RunComfy(TOKEN, base_url=fake.base_url) as client:
            first = client.submit(request(0))
            await eventually(lambda: first.request_id is not None)
            job = client.submit(request(1))
            async with _slow_submits(fake):
                await eventually(lambda: fake.in_flight != 0)
                assert job.request_id is None
                outcome = await job.cancel()
        assert outcome is not None
        assert outcome.cancelled
        assert job.request_id is not None
        assert job.billed is False
        assert fake.jobs[job.request_id].cancelled


@contextlib.asynccontextmanager
async def _slow_submits(fake: FakeRunComfy) -> AsyncIterator[None]:
    fake.inject("submit", "slow")
    yield


async def test_cancelling_the_task_that_awaits_gather_cancels_the_jobs():
    """gather's waiter cancelled: its queued jobs are cancelled remotely."""
    async with world(slots=1, run_time=Fixed(600.0)) as (clock, fake):
        async with client_for(fake, clock) as client:
            jobs = client.submit_many(request(i) for i in range(4))
            with anyio.move_on_after(0.05):
                await client.gather(jobs)
            await eventually(lambda: all(job.done() for job in jobs[1:]))
            assert all(isinstance(job.exception(), JobCancelledError) for job in jobs[1:])


async def test_close_with_unsent_jobs_drops_them_unbilled():
    """Jobs still waiting for a place are dropped at close, unsent."""
    async with world(slots=1, run_time=Fixed(600.0)) as (clock, fake):
        async with client_for(fake, clock, limits=Limits(max_jobs_in_flight=2)) as client:
            jobs = client.submit_many(request(i) for i in range(10))
            await eventually(lambda: sum(1 for job in jobs if job.request_id) >= 2)
        unsent = [job for job in jobs if job.request_id is None]
        assert 8 == len(unsent)
        assert all(job.billed is False for job in unsent)
        assert 2 == len(fake.jobs)


async def test_a_poll_answered_404_ends_the_job_at_once():
    """A 404 on a poll is final (no retries), with its own error."""
    async with world() as (clock, fake):
        async with client_for(fake, clock) as client:
            job = client.attach("no-such-request")
            with pytest.raises(NotFoundError):
                await job
            assert 1 == job.polls


async def test_polls_that_keep_failing_end_within_the_retry_budget():
    """A server whose polls all fail: the job gives up within the retry budget."""
    async with world(faults=Faults(server_error_rate=0.0)) as (clock, fake):
        async with client_for(
            fake, clock, retry=RetryPolicy(initial=1.0, maximum=10.0, attempts=100, timeout=60.0)
        ) as client:
            job = client.submit(request())
            await eventually(lambda: job.request_id is not None)
            fake.inject("any", "server_error", times=10_000)
            start = clock.now()
            with pytest.raises(Exception) as failure:
                await job
            assert clock.now() - start <= 60.0 + 10.0 + 1.0
    assert "server" in type(failure.value).__name__.lower()


async def test_a_journal_holds_no_false_uncertain_after_close(tmp_path):
    """Jobs dropped at close (unsent, or backing off from 429) are not left 'intent'.

    The intent is written right before a submit leaves; a drop after it (a 429
    answered, the retry dropped) is recorded as not accepted, so a resumed run
    sends the job again instead of reporting it uncertain.
    """
    path = tmp_path / "batch.journal"
    async with world(faults=Faults(rate_limited_rate=1.0)) as (clock, fake):
        async with client_for(
            fake, clock, journal=path, limits=Limits(max_jobs_in_flight=2)
        ) as client:
            jobs = client.submit_many(request(i) for i in range(5))
            await eventually(lambda: fake.count("submit") >= 2)
    assert all(job.done() and job.billed is False for job in jobs)
    assert 0 == len(fake.jobs)
    records = await SQLiteJournal.read(path)
    assert all(record.state != "intent" for record in records)
    async with SQLiteJournal(path) as journal:
        assert [] == list(await journal.unfinished())


async def test_bodies_in_flight_stay_within_the_byte_budget(tmp_path):
    """Local images are encoded only as the body budget allows: few submits at once."""
    image = tmp_path / "frame.png"
    image.write_bytes(sample_png(640, 480))
    requests = [ImageToVideo.from_file(image, prompt=f"take {i}") for i in range(12)]
    size = requests[0].body_size
    async with world(latency=1.0) as (clock, fake):
        limits = Limits(initial_rate=10_000.0, burst=1_000.0, max_body_bytes=3 * size)
        async with client_for(fake, clock, limits=limits) as client:
            results = await client.run(requests)
    assert all(not isinstance(result, Exception) for result in results)
    # Each submit is answered a (virtual) second after it arrives: no more
    # than three may arrive within any second.
    times = sorted(r.time for r in fake.requests if r.kind == "submit")
    assert 12 == len(times)
    assert 3 == max(sum(1 for t in times if start <= t < start + 0.999) for start in times)
