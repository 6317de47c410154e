"""The engine: many jobs at once, limits, deadlines, cancellation, re-attach."""

from __future__ import annotations

import asyncio
import math

import anyio
import pytest

from runcomfy_async import (
    AdaptivePolling,
    Cancelled,
    ClientClosedError,
    FixedInterval,
    ImageToVideo,
    InputRejectedError,
    JobCancelledError,
    JobFailedError,
    JobFinished,
    JobResult,
    JobRunningOnError,
    JobStatusChanged,
    JobSubmitted,
    JobTimeoutError,
    Limits,
    ModelRequest,
    Pending,
    Queued,
    RetryPolicy,
    RunComfy,
    Running,
    SubmissionUncertainError,
    Succeeded,
)
from runcomfy_async.testing import FakeRunComfy, Faults, Fixed, JobPlan, ManualClock

SCALE = 0.001  # one nominal second of the emulator is a millisecond
IMAGE = "https://example.com/first-frame.png"


def fast_policy() -> AdaptivePolling:
    """Time constants scaled like the emulator's."""
    return AdaptivePolling(
        floor=0.002,
        ceiling=0.05,
        queued_ceiling=0.2,
        first_poll=0.005,
        delay_cost=0.15 * SCALE,
    )


def fast_retry() -> RetryPolicy:
    return RetryPolicy(initial=0.001, maximum=0.005, attempts=4)


def request(i: int = 0, **kw) -> ImageToVideo:
    return ImageToVideo(prompt=f"a cat walks, take {i}", image_url=IMAGE, **kw)


def fast_limits(**kw) -> Limits:
    """Request pacing scaled like the emulator's time (not a limit under test)."""
    kw.setdefault("initial_rate", 5000.0)
    kw.setdefault("burst", 500.0)
    return Limits(**kw)


def open_client(fake: FakeRunComfy, **kw) -> RunComfy:
    kw.setdefault("polling", fast_policy())
    kw.setdefault("limits", fast_limits())
    kw.setdefault("retry", fast_retry())
    return RunComfy("test-token", base_url=fake.base_url, **kw)


async def wait_until(client: RunComfy, condition, limit: float = 5.0) -> None:
    """Wait, without polling, until *condition()* holds after some job event."""
    ready = anyio.Event()

    def check(_event: object = None) -> None:
        if condition():
            ready.set()

    client._monitor.hooks.append(check)
    try:
        check()
        with anyio.fail_after(limit):
            await ready.wait()
    finally:
        client._monitor.hooks.remove(check)


def live_overlap(fake: FakeRunComfy) -> int:
    """Most jobs that existed unfinished on the server at one moment."""
    edges = []
    for job in fake.jobs.values():
        end = job.finished if job.finished is not None else math.inf
        edges += [(job.created, 1), (end, -1)]
    peak = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        current += step
        peak = max(peak, current)
    return peak


async def test_one_job_resolves_to_its_video_url():
    """Awaiting a job gives its result with the primary video URL at hand."""
    async with FakeRunComfy(time_scale=SCALE) as fake, open_client(fake) as client:
        job = client.submit(request())
        assert isinstance(job.state, Pending)
        result = await job
        assert isinstance(result, JobResult)
        assert result.video_url is not None
        assert result.video_url.startswith(fake.base_url + "/_emulator/files/")
        assert (result.video_url,) == result.video_urls
        assert result.cost is not None
        assert job.request_id == result.request_id
        assert isinstance(job.state, Succeeded)
        assert 1 == fake.count("submit")
        # Nothing of this model was seen queued, so even the first poll asks
        # /result: a job that runs (or is done) needs no /status at all.
        assert 0 == fake.count("status")
        assert job.polls == fake.count("result") + fake.count("status")


async def test_many_jobs_with_mixed_outcomes_each_keep_their_own():
    """A failure sinks only its own job; every other job still resolves."""
    plans = {3: "failed", 7: "failed", 11: "failed"}

    def plan(_model: str, payload: dict[str, object]) -> JobPlan:
        index = int(str(payload["prompt"]).rsplit(" ", 1)[-1])
        return JobPlan(outcome=plans.get(index, "succeeded"))  # type: ignore[arg-type]

    async with (
        FakeRunComfy(time_scale=SCALE, slots=5, plan=plan) as fake,
        open_client(fake) as client,
    ):
        jobs = client.submit_many(request(i) for i in range(40))
        outcomes = await client.gather(jobs)
        stats = client.stats

    assert 40 == len(outcomes)
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, JobFailedError)]
    assert sorted(plans) == failed
    assert all(isinstance(o, JobResult) for i, o in enumerate(outcomes) if i not in plans)
    assert {"succeeded": 37, "failed": 3} == dict(stats.jobs)
    assert 40 == fake.count("submit")
    assert 40 == len(fake.jobs)  # nothing submitted twice


async def test_as_completed_yields_every_job_once_in_finish_order():
    """as_completed yields each job when it finishes, failed ones included."""

    def plan(_model: str, payload: dict[str, object]) -> JobPlan:
        index = int(str(payload["prompt"]).rsplit(" ", 1)[-1])
        return JobPlan(run_time=30.0 * (6 - index), outcome="failed" if index == 2 else "succeeded")

    fine = FixedInterval(interval=0.002)  # order is only visible with fine polling
    async with (
        FakeRunComfy(time_scale=SCALE, plan=plan) as fake,
        open_client(fake, polling=fine) as client,
    ):
        jobs = client.submit_many(request(i) for i in range(6))
        seen = [job async for job in client.as_completed(jobs)]

    assert sorted(map(id, jobs)) == sorted(map(id, seen))
    assert all(job.done() for job in seen)
    assert [5, 4, 3, 2, 1, 0] == [jobs.index(job) for job in seen]
    assert isinstance(seen[3].exception(), JobFailedError)
    with pytest.raises(JobFailedError):
        seen[3].result()


async def test_limits_on_jobs_in_flight_and_concurrent_requests_hold():
    """No more jobs in flight, or requests at once, than the limits allow."""
    limits = fast_limits(max_jobs_in_flight=6, max_concurrent_requests=3)
    in_flight = []

    async with FakeRunComfy(time_scale=SCALE, latency=2.0) as fake:
        client = open_client(fake, limits=limits)

        def hook(event: object) -> None:
            if isinstance(event, JobSubmitted):
                in_flight.append(client._engine.in_flight)

        client._monitor.hooks.append(hook)
        async with client:
            await client.run([request(i) for i in range(30)])

    assert 30 == len(fake.jobs)
    assert max(in_flight) <= 6
    assert live_overlap(fake) <= 6
    assert 1 <= fake.peak_concurrency <= 3


async def test_a_poll_booked_while_the_dispatcher_sleeps_wakes_it():
    """Regression: polls booked after every submit went out are still sent."""
    policy = FixedInterval(interval=0.01)
    async with FakeRunComfy(time_scale=SCALE, run_time=Fixed(30.0)) as fake:
        async with open_client(fake, polling=policy) as client:
            jobs = client.submit_many(request(i) for i in range(3))
            with anyio.fail_after(5):
                results = await client.gather(jobs)
    assert all(isinstance(r, JobResult) for r in results)


async def test_queued_jobs_show_their_position_and_events_fire():
    """A queued job shows its position; hooks see submit, changes and finish."""
    events: list[object] = []
    async with FakeRunComfy(time_scale=SCALE, slots=1, run_time=Fixed(40.0)) as fake:
        async with open_client(fake, hooks=[events.append]) as client:
            jobs = client.submit_many(request(i) for i in range(3))
            await client.gather(jobs)
    # The first sighting may come from /result (no position); once the model
    # is known to queue, /status is asked, with positions.
    positions = {
        e.new.position
        for e in events
        if isinstance(e, JobStatusChanged) and e.job is jobs[2] and isinstance(e.new, Queued)
    } - {None}

    assert positions  # it was seen queued, with a position
    assert positions <= {0, 1}
    submitted = [e for e in events if isinstance(e, JobSubmitted)]
    finished = [e for e in events if isinstance(e, JobFinished)]
    changes = [e for e in events if isinstance(e, JobStatusChanged)]
    assert 3 == len(submitted) == len(finished)
    assert any(isinstance(e.new, Running) for e in changes)
    assert all(isinstance(e.job.state, Succeeded) for e in finished)


async def test_job_deadline_cancels_a_queued_job_remotely():
    """A job whose deadline passes while queued is cancelled on the server."""
    async with FakeRunComfy(time_scale=SCALE, slots=1, run_time=Fixed(500.0)) as fake:
        async with open_client(fake) as client:
            blocker = client.submit(request(0))
            await wait_until(client, lambda: blocker.request_id is not None)
            late = client.submit(request(1), timeout=0.05)
            with pytest.raises(JobTimeoutError) as info:
                await late
            assert info.value.cancel is not None
            assert info.value.cancel.cancelled
            assert late.request_id is not None
            assert fake.jobs[late.request_id].cancelled
            await blocker.cancel()


async def test_job_deadline_on_a_running_job_says_it_runs_on():
    """A running job past its deadline ends locally and says it is billed."""
    async with FakeRunComfy(time_scale=SCALE, run_time=Fixed(500.0)) as fake:
        async with open_client(fake) as client:
            job = client.submit(request(), timeout=0.1)
            with pytest.raises(JobTimeoutError, match="runs on and is billed"):
                await job
            assert job.request_id is not None
            assert not fake.jobs[job.request_id].cancelled
            assert isinstance(job.exception(), TimeoutError)


async def test_batch_deadline_applies_to_every_job():
    """submit_many(timeout=) gives the whole batch one deadline."""

    def plan(_model: str, payload: dict[str, object]) -> JobPlan:
        slow = str(payload["prompt"]).endswith(("2", "3"))
        return JobPlan(run_time=1000.0 if slow else 5.0)

    async with FakeRunComfy(time_scale=SCALE, plan=plan) as fake, open_client(fake) as client:
        start = anyio.current_time()
        outcomes = await client.run([request(i) for i in range(4)], timeout=0.15)
        took = anyio.current_time() - start

    assert [JobResult, JobResult, JobTimeoutError, JobTimeoutError] == [type(o) for o in outcomes]
    assert took < 2.0


async def test_unsent_jobs_past_their_deadline_are_never_submitted():
    """A job still waiting for capacity at its deadline costs nothing."""
    limits = fast_limits(max_jobs_in_flight=1)
    async with FakeRunComfy(time_scale=SCALE, run_time=Fixed(300.0)) as fake:
        async with open_client(fake, limits=limits) as client:
            jobs = client.submit_many([request(0), request(1)], timeout=0.05)
            outcomes = await client.gather(jobs)
    assert [JobTimeoutError, JobTimeoutError] == [type(o) for o in outcomes]
    assert "nothing was billed" in str(outcomes[1])
    assert 1 == fake.count("submit")


async def test_cancelling_the_awaiting_task_cancels_a_queued_job_remotely():
    """A waiter that gives up (a timeout scope) cancels its queued job remotely."""
    async with FakeRunComfy(time_scale=SCALE, slots=1, run_time=Fixed(500.0)) as fake:
        async with open_client(fake) as client:
            blocker = client.submit(request(0))
            queued = client.submit(request(1))
            with anyio.move_on_after(0.05):
                await queued
            with anyio.fail_after(5):
                with pytest.raises(JobCancelledError):
                    await queued._settled() or queued.result()
            assert queued.request_id is not None
            assert fake.jobs[queued.request_id].cancelled
            assert queued.cancel_outcome is not None
            assert queued.cancel_outcome.cancelled
            assert 1 == fake.count("cancel")
            outcome = await blocker.cancel()
            assert outcome is not None
            assert not outcome.cancelled  # running: not cancellable


async def test_abandoned_running_job_is_reported_and_still_tracked():
    """A running job whose waiter gives up runs on; its result is kept."""
    async with FakeRunComfy(time_scale=SCALE, run_time=Fixed(150.0)) as fake:
        async with open_client(fake) as client:
            job = client.submit(request())
            await wait_until(client, lambda: isinstance(job.state, Running))
            with anyio.move_on_after(0.01):
                await job
            result = await job.wait(cancel_remote=False)
    assert result.video_url is not None
    assert job.cancel_outcome is not None
    assert not job.cancel_outcome.cancelled
    assert "not_cancellable" == job.cancel_outcome.outcome


async def test_job_cancel_before_sending_costs_nothing():
    """Cancelling a job still waiting for capacity drops it unsent."""
    limits = fast_limits(max_jobs_in_flight=1)
    async with FakeRunComfy(time_scale=SCALE, run_time=Fixed(20.0)) as fake:
        async with open_client(fake, limits=limits) as client:
            first, second = client.submit_many([request(0), request(1)])
            assert await second.cancel() is None
            with pytest.raises(JobCancelledError, match="nothing was billed"):
                await second
            await first
    assert 1 == fake.count("submit")
    assert second.request_id is None


async def test_closing_the_client_cancels_queued_jobs_and_reports_running_ones():
    """Leaving the session early cancels queued jobs and lists running ones."""
    async with FakeRunComfy(time_scale=SCALE, slots=2, run_time=Fixed(1000.0)) as fake:
        async with open_client(fake) as client:
            jobs = client.submit_many(request(i) for i in range(5))
            await wait_until(
                client, lambda: all(isinstance(j.state, (Queued, Running)) for j in jobs)
            )
        running_on = client.running_on

    assert 2 == len(running_on)
    # Queued ones were cancelled (not billed); running ones are said to run on.
    assert all(isinstance(job.exception(), JobRunningOnError) for job in running_on)
    assert all(job.billed for job in running_on)
    others = [job for job in jobs if job not in running_on]
    assert all(isinstance(job.exception(), JobCancelledError) for job in others)
    assert not any(job.billed for job in others)
    cancelled = [j for j in fake.jobs.values() if j.cancelled]
    assert 3 == len(cancelled)
    assert {j.request_id for j in running_on} == {
        rid for rid, j in fake.jobs.items() if not j.cancelled
    }
    assert "re-attach" in str(running_on[0].exception())


async def test_reattach_follows_a_job_submitted_elsewhere():
    """A job submitted by another client can be re-attached by request id."""
    async with FakeRunComfy(time_scale=SCALE, run_time=Fixed(30.0)) as fake:
        async with open_client(fake) as first:
            submission = await first.api.submit(request())
        async with open_client(fake) as second:
            job = second.attach(submission.request_id, model_id=ImageToVideo.model_id)
            assert job.request is None
            result = await job
    assert submission.request_id == result.request_id
    assert 1 == fake.count("submit")


async def test_one_jobs_bad_input_leaves_the_others_intact():
    """A server-side rejection (422) fails one job; the others succeed."""
    async with FakeRunComfy(time_scale=SCALE) as fake, open_client(fake) as client:
        good = client.submit(request(1))
        bad = client.submit(ModelRequest(ImageToVideo.model_id, {"prompt": "no image"}))
        other = client.submit(request(2))
        outcomes = await client.gather([good, bad, other])
    assert [JobResult, InputRejectedError, JobResult] == [type(o) for o in outcomes]
    assert outcomes[1].detail  # the server's field list


async def test_an_uncertain_submit_fails_its_job_and_is_not_resent():
    """A lost submit answer fails that job as uncertain, without a re-send."""
    async with FakeRunComfy(time_scale=SCALE) as fake, open_client(fake) as client:
        fake.inject("submit", "drop_after")
        jobs = client.submit_many(request(i) for i in range(3))
        outcomes = await client.gather(jobs)
    assert 1 == sum(isinstance(o, SubmissionUncertainError) for o in outcomes)
    assert 2 == sum(isinstance(o, JobResult) for o in outcomes)
    assert 3 == fake.count("submit") == len(fake.jobs)


async def test_an_auth_failure_stops_all_further_submits():
    """A bad token fails every job after one submit: no wasted calls."""
    async with FakeRunComfy(time_scale=SCALE) as fake:
        client = RunComfy("wrong-token", base_url=fake.base_url, polling=fast_policy())
        async with client:
            outcomes = await client.run([request(i) for i in range(20)])
    assert all(type(o).__name__ == "AuthenticationError" for o in outcomes)
    assert 1 == fake.count("submit")  # the first submit probes alone


async def test_polls_survive_server_faults_and_every_job_ends():
    """With 5xx, drops and 429s on polls, every job still gets its result."""
    faults = Faults(server_error_rate=0.1, html_error_rate=0.05, rate_limited_rate=0.05)
    async with FakeRunComfy(time_scale=SCALE, faults=faults, seed=7) as fake:
        async with open_client(
            fake, retry=RetryPolicy(initial=0.001, maximum=0.005, attempts=8)
        ) as client:
            jobs = client.submit_many(request(i) for i in range(30))
            outcomes = await client.gather(jobs)
            stats = client.stats
    submits = fake.count("submit")
    assert len(fake.jobs) + sum(isinstance(o, SubmissionUncertainError) for o in outcomes) >= 30
    assert len(fake.jobs) <= submits  # a 5xx before processing is retried
    assert all(isinstance(o, (JobResult, SubmissionUncertainError)) for o in outcomes), outcomes
    assert stats.retries > 0
    # Never two jobs for one request: each prompt appears at most once.
    prompts = [j.payload["prompt"] for j in fake.jobs.values()]
    assert len(prompts) == len(set(prompts))


async def test_closing_leaves_no_tasks_and_refuses_reuse():
    """After close no task of the client is left and the client refuses reuse."""
    before = set(asyncio.all_tasks())
    async with FakeRunComfy(time_scale=SCALE) as fake:
        client = open_client(fake)
        async with client:
            await client.run([request(i) for i in range(5)])
        leftovers = set(asyncio.all_tasks()) - before
        assert not [t for t in leftovers if "runcomfy" in t.get_name()]
        assert client._transport._session is None
        with pytest.raises(ClientClosedError):
            client.submit(request())
        with pytest.raises(ClientClosedError):
            async with client:
                pass


async def test_server_side_cancel_resolves_the_job_as_cancelled():
    """A job cancelled by someone else ends with JobCancelledError."""
    async with FakeRunComfy(time_scale=SCALE, slots=1, run_time=Fixed(300.0)) as fake:
        async with open_client(fake) as client, open_client(fake) as other:
            blocker = client.submit(request(0))
            job = client.submit(request(1))
            await wait_until(client, lambda: job.request_id is not None)
            outcome = await other.api.cancel(job.request_id)
            assert outcome.cancelled
            with pytest.raises(JobCancelledError):
                await job
            assert isinstance(job.state, Cancelled)
            await blocker.cancel()


async def test_job_repr_and_counts_need_no_request():
    """A job's repr shows id, state and counts, read locally."""
    async with FakeRunComfy(time_scale=SCALE) as fake, open_client(fake) as client:
        job = client.submit(request())
        assert "unsent pending" in repr(job)
        await job
        before = fake.count()
        text = repr(job)
        assert job.request_id is not None
        assert job.request_id in text
        assert "succeeded polls=" in text
        assert f"polls={job.polls}" in text
        assert before == fake.count()
        assert "live=0" in repr(client)


async def test_leaving_as_completed_early_disturbs_nothing():
    """Breaking out of as_completed leaves the other jobs running normally."""
    async with FakeRunComfy(time_scale=SCALE) as fake, open_client(fake) as client:
        jobs = client.submit_many(request(i) for i in range(5))
        async for _first in client.as_completed(jobs):
            break
        outcomes = await client.gather(jobs)
        stats = client.stats
    assert all(isinstance(o, JobResult) for o in outcomes)
    assert 5 == stats.jobs["succeeded"]


async def test_a_failing_done_callback_is_logged_not_raised(caplog):
    """A done-callback that raises is logged; the job and the engine go on."""

    def broken(_job: object) -> None:
        raise RuntimeError("observer bug")

    async with FakeRunComfy(time_scale=SCALE) as fake, open_client(fake) as client:
        job = client.submit(request())
        job.add_done_callback(broken)
        result = await job
        second = await client.submit(request(1))
    assert result.video_url is not None
    assert second.video_url is not None
    assert "observer bug" in caplog.text


async def test_closing_collects_a_job_that_finished_unseen():
    """A job done on the server but not yet polled gets its result at close."""
    clock = ManualClock()
    async with FakeRunComfy(clock=clock, run_time=Fixed(5.0)) as fake:
        client = open_client(fake, polling=FixedInterval(interval=30.0))
        async with client:
            job = client.submit(request())
            await wait_until(client, lambda: job.request_id is not None)
            clock.advance(10.0)  # it finishes on the server; no poll is due for 30 s
    assert isinstance(job.result(), JobResult)
    assert [] == client.running_on


async def test_job_outcome_names_how_each_job_ended():
    """Job.outcome is None while running, then one word for how it ended."""

    def plan(_model: str, payload: dict[str, object]) -> JobPlan:
        return JobPlan(outcome="failed" if str(payload["prompt"]).endswith("1") else "succeeded")

    async with FakeRunComfy(time_scale=SCALE, plan=plan) as fake, open_client(fake) as client:
        jobs = client.submit_many(request(i) for i in range(2))
        assert [None, None] == [job.outcome for job in jobs]
        await client.gather(jobs)
    assert ["succeeded", "failed"] == [job.outcome for job in jobs]
