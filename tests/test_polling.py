"""Polling policies: fixed intervals, the learned hazard, queue handling, jitter."""

from __future__ import annotations

import bisect
import heapq
import importlib
import math
import random
import statistics
import sys
from pathlib import Path

import pytest

from runcomfy_async import AdaptivePolling, FixedInterval, PollState
from runcomfy_async._polling import Phase, RunTimeModel


def state(phase: str = "unknown", **kw) -> PollState:
    return PollState(
        key=kw.pop("key", "m"), scale=kw.pop("scale", 1.0), submitted_at=0.0, phase=phase, **kw
    )


def seeded(**kw) -> AdaptivePolling:
    return AdaptivePolling(rand=random.Random(1).random, **kw)


def teach(policy: AdaptivePolling, runs: list[float], key: str = "m") -> None:
    """Feed finished jobs (watched from their start) into *policy*."""
    for run in runs:
        job = state("running", key=key, started_at=0.0)
        policy.finished(job, run + 0.5, run)


def lognormal_runs(n: int, mean: float = 60.0, cv: float = 0.3, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    s2 = math.log(1 + cv * cv)
    return [rng.lognormvariate(math.log(mean) - s2 / 2, math.sqrt(s2)) for _ in range(n)]


def test_fixed_interval_is_fixed_and_its_jitter_bounded():
    """FixedInterval returns its interval; with jitter, within the share."""
    assert 2.0 == FixedInterval(interval=2.0).next_delay(state(), 0.0)
    jittered = FixedInterval(interval=2.0, jitter=0.1)
    delays = [jittered.next_delay(state(), 0.0) for _ in range(200)]
    assert 1.8 <= min(delays) < max(delays) <= 2.2
    assert not FixedInterval(interval=1.0).finished(state(), 0.0, None)


def test_a_new_model_polls_first_after_first_poll_then_geometrically():
    """Knowing nothing, a probe polls at growth x first_poll, then a share of the time run.

    The share is capped at sqrt(first_poll x t): the longer a batch has run
    unseen, the tighter its search.
    """
    policy = seeded(jitter=0.0, first_poll=2.0, growth=1.0)
    assert 2.0 == policy.next_delay(state(), 0.0)
    job = state("running", started_at=0.0)
    job.see("running", None, 1.5)
    assert 2.0 == policy.next_delay(job, 1.5)  # growth x first_poll
    job.see("running", None, 2.0)
    assert 2.0 == policy.next_delay(job, 2.0)  # growth x t = sqrt(first_poll x t)
    job.see("running", None, 32.0)
    assert 8.0 == policy.next_delay(job, 32.0)  # sqrt(2 x 32), not 32


def test_a_new_models_batch_waits_for_its_probes():
    """The first jobs and one in probe_every probe; the rest wait wait_growth longer.

    The first probes start at once; later ones join probe_ramp per first_poll
    seconds (probe n after first_poll x (n - probes) / probe_ramp): a few search
    the first seconds, more join as the batch runs on unseen.
    """
    policy = seeded(
        jitter=0.0,
        first_poll=2.0,
        growth=0.5,
        wait_growth=5.0,
        probes=2,
        probe_every=4,
        probe_ramp=0.5,
    )
    delays = [policy.next_delay(state(), 0.0) for _ in range(9)]
    assert [1.0, 1.0, 10.0, 10.0, 1.0, 10.0, 10.0, 10.0, 4.0] == delays


@pytest.mark.parametrize("phase", ["unknown", "running", "queued"])
def test_every_delay_stays_within_floor_and_ceiling(phase):
    """Delays never leave [floor, ceiling] (queued: [floor, queued_ceiling])."""
    policy = seeded(floor=0.5, ceiling=20.0, queued_ceiling=100.0)
    teach(policy, lognormal_runs(50))
    top = 100.0 if phase == "queued" else 20.0
    for now in (0.0, 0.1, 5.0, 40.0, 60.0, 300.0, 1e5):
        job = state(phase, started_at=0.0 if phase == "running" else None, position=5)
        delay = policy.next_delay(job, now)
        assert 0.5 <= delay <= top, (phase, now, delay)


def test_jitter_spreads_jobs_that_would_poll_in_step():
    """Identical jobs get different delays, within the jitter share."""
    policy = seeded(jitter=0.1, first_poll=2.0, growth=1.0, probes=10**6, probe_ramp=math.inf)
    delays = [policy.next_delay(state(), 0.0) for _ in range(500)]
    assert 1.8 <= min(delays) < max(delays) <= 2.2
    assert len(set(delays)) > 400


def test_a_learned_model_polls_rarely_early_and_densely_near_the_finish():
    """Spacing is wide where finishing is unlikely and narrow where it is likely."""
    policy = seeded(jitter=0.0, floor=0.1, ceiling=600.0, delay_cost=0.15)
    teach(policy, lognormal_runs(300))
    early = policy.next_delay(state("running", started_at=0.0), 5.0)
    near = policy.next_delay(state("running", started_at=0.0), 60.0)
    assert early > 15.0
    assert near < 8.0
    assert early > 3 * near


def test_no_step_leaps_over_more_than_max_step_chance():
    """The chance of finishing within one step stays under max_step_chance."""
    runs = sorted(lognormal_runs(2000))
    policy = seeded(jitter=0.0, floor=0.01, ceiling=1000.0, delay_cost=100.0, max_step_chance=0.2)
    teach(policy, runs)
    for start in (0.0, 20.0, 40.0, 55.0, 70.0):
        delay = policy.next_delay(state("running", started_at=0.0), start)
        alive = len(runs) - bisect.bisect_right(runs, start)
        done_in_step = bisect.bisect_right(runs, start + delay) - bisect.bisect_right(runs, start)
        assert done_in_step / alive < 0.2 + 0.05, (start, delay)


def test_scale_stretches_the_learned_run_time():
    """A job expected to run twice as long is polled on a stretched schedule.

    Its hazard per real second halves, so the optimal spacing grows: by
    about sqrt(2) where the hazard rule binds and by 2 where the step cap
    does (the mid-step hazard moves the exact factor a little).
    """
    policy = seeded(jitter=0.0, floor=0.01, ceiling=1000.0)
    teach(policy, lognormal_runs(300))
    for run in (10.0, 30.0, 60.0):
        short = policy.next_delay(state("running", started_at=0.0), run)
        long = policy.next_delay(state("running", started_at=0.0, scale=2.0), 2 * run)
        assert 1.2 * short <= long <= 3 * short, run


def test_models_learn_separately_by_key():
    """What one model taught does not change another model's schedule."""
    policy = seeded(jitter=0.0, first_poll=2.0, growth=1.0)
    teach(policy, lognormal_runs(100), key="a")
    assert 2.0 == policy.next_delay(state(key="b"), 0.0)


def test_the_queue_drain_rate_is_learned_from_moving_positions():
    """Positions moving 10 -> 4 in 3 s teach a drain of 2 positions/s."""
    policy = seeded(jitter=0.0, queue_share=0.5)
    job = state()
    job.see("queued", 10, 1.0)
    policy.observe(job, 1.0)
    job.see("queued", 4, 4.0)
    policy.observe(job, 4.0)
    assert policy.drain_rate is not None
    assert 0.0 < policy.drain_rate <= 2.0
    # A share of the expected wait ((4 + 1) / drain).
    assert pytest.approx(0.5 * 5 / policy.drain_rate) == policy.next_delay(job, 4.0)


def test_a_job_about_to_start_is_next_polled_where_finishing_is_likely():
    """At the queue's head, the next poll skips the start and its quiet spell."""
    policy = seeded(jitter=0.0, floor=0.01, ceiling=1000.0)
    teach(policy, lognormal_runs(300))
    policy._drain = 1.0
    job = state("queued", position=0, position_at=0.0, previous_position=1)
    first_step = policy.next_delay(state("running", started_at=0.0), 0.0)
    assert pytest.approx(1.0 + first_step) == policy.next_delay(job, 0.0)


def test_the_start_is_dated_from_the_drain_rate():
    """A job first seen running is dated by its position and the drain."""
    policy = seeded()
    policy._drain = 0.5
    job = state()
    job.see("queued", 1, 10.0)
    policy.observe(job, 10.0)
    job.see("running", None, 30.0)
    policy.observe(job, 30.0)
    assert pytest.approx(14.0) == job.started_at  # 10 + (1 + 1) / 0.5


def test_finishes_ask_for_a_replan_only_while_the_model_settles():
    """The first usable model and each doubling ask to re-plan, up to 64."""
    policy = seeded(min_events=3)  # 3 makes "first usable" distinct from a doubling
    asks = []
    for run in lognormal_runs(130):
        job = state("running", started_at=0.0)
        asks.append(policy.finished(job, run, run))
    assert [3, 4, 8, 16, 32, 64] == [i + 1 for i, ask in enumerate(asks) if ask]


def test_long_exposure_without_finishes_reads_as_a_low_hazard():
    """Time at risk with no finish gives a small, positive hazard."""
    model = RunTimeModel(min_events=3)
    model.add_exposure(0.0, 100.0)
    for run in (90.0, 91.0, 92.0, 93.0):
        model.add_event(run)
    assert 0 < model.hazard(10.0) < model.hazard(90.0)
    assert model.cumulative(10.0) < model.cumulative(50.0) < model.cumulative(95.0)
    assert 95.0 <= model.horizon(95.0, 0.1) < math.inf


def simulate(policy, runs: list[float], slots: int | None) -> tuple[float, float]:
    """Poll FIFO-queued jobs in virtual time: (polls per job, mean detection delay)."""
    free = [0.0] * (slots or len(runs))
    starts, finishes = [], []
    for run in runs:
        start = heapq.heappop(free)
        starts.append(start)
        finishes.append(start + run)
        heapq.heappush(free, start + run)
    ordered = sorted(starts)
    states = [state() for _ in runs]
    due = [policy.next_delay(s, 0.0) for s in states]
    heap = [(d, i) for i, d in enumerate(due)]
    heapq.heapify(heap)
    polls, delays = [0] * len(runs), [0.0] * len(runs)
    live = set(range(len(runs)))
    while heap:
        now, i = heapq.heappop(heap)
        if i not in live or now != due[i]:
            continue  # superseded by a re-plan
        polls[i] += 1
        if now >= finishes[i]:
            delays[i] = now - finishes[i]
            live.discard(i)
            if policy.finished(states[i], now, finishes[i]):
                # As the scheduler does: pull the others' polls earlier.
                for j in live:
                    sooner = now + policy.next_delay(states[j], now)
                    if sooner < due[j]:
                        due[j] = sooner
                        heapq.heappush(heap, (sooner, j))
            continue
        if starts[i] > now:
            states[i].see("queued", i - bisect.bisect_right(ordered, now), now)
        else:
            states[i].see("running", None, now)
        policy.observe(states[i], now)
        due[i] = now + policy.next_delay(states[i], now)
        heapq.heappush(heap, (due[i], i))
    return statistics.mean(polls), statistics.mean(delays)


def test_a_queued_batch_costs_a_fraction_of_a_fixed_pollers_requests():
    """On a queued batch, adaptive polling needs far fewer polls than a fixed
    poller tuned to the same mean detection delay (virtual time, no waiting)."""
    runs = lognormal_runs(200)
    polls, delay = simulate(seeded(), runs, slots=10)
    fixed_polls, fixed_delay = simulate(FixedInterval(interval=2 * delay), runs, slots=10)
    assert pytest.approx(delay, rel=0.25) == fixed_delay
    assert polls < 0.25 * fixed_polls


def test_the_drain_rate_is_positions_moved_over_time_watched():
    """Short sightings with no move do not drag the drain rate towards zero."""
    policy = seeded()
    for _ in range(10):
        policy._learn_drain(50, 50, 1.0)  # watched a second, nothing moved
    policy._learn_drain(50, 45, 30.0)
    assert pytest.approx(5 / 40) == policy.drain_rate


def test_a_queued_job_never_leaps_past_a_twice_faster_queue():
    """Far back in the queue, a step stops where a doubled drain could end the job."""
    policy = seeded(jitter=0.0, queue_share=0.8, queued_ceiling=10_000.0, ceiling=1000.0)
    teach(policy, lognormal_runs(300))
    policy._drain = 1.0
    policy._moving_since = -1000.0
    first_step = policy.next_delay(state("running", started_at=0.0), 0.0)
    job = state("queued", position=199, position_at=0.0, previous_position=200)
    assert pytest.approx(0.5 * 200 + first_step) == policy.next_delay(job, 0.0)


def test_phase_is_an_enum_that_still_equals_its_word():
    """see() takes a Phase or the old word; a phase compares equal to its word."""
    job = state()
    job.see("queued", 3, 1.0)
    assert Phase.QUEUED is job.phase
    job.see(Phase.RUNNING, None, 2.0)
    assert Phase.RUNNING is job.phase
    assert "running" == job.phase


# -- against the bound, in virtual time (benchmarks/poll_sim.py drives the policy) --

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
poll_sim = importlib.import_module("poll_sim")

# Ratios to the bound (poll requests / the fewest any schedule needs at the same
# mean delay), seeds 1 to 4. The targets are 1.15 cold and 1.05 warm:
# where today's figure meets its target the target is the limit; where it
# misses, the limit is pinned a little above today's figure, so a regression
# fails (see docs/performance.md for the figures and why those targets are
# missed).
PINNED = [
    ("lognormal cv 0.3", "cold", 1.15),  # met (1.054 today)
    ("lognormal cv 1.0", "cold", 1.15),  # met (1.124 today)
    ("two modes 30/90 s", "cold", 1.30),  # target 1.15: missed (1.228 today)
    ("two modes 30/90 s", "warm", 1.05),  # met (0.977 today)
    ("three modes 20/60/150 s", "cold", 1.41),  # target 1.15: missed (1.344 today)
    ("three modes 20/60/150 s", "warm", 1.05),  # met (1.032 today)
    ("heavy tail on 1/3", "cold", 1.22),  # target 1.15: missed (1.160 today)
    ("heavy tail on 1/3", "warm", 1.05),  # met (1.024 today)
]


@pytest.mark.parametrize(
    ("workload", "mode", "limit"), PINNED, ids=[f"{w}-{m}" for w, m, _ in PINNED]
)
def test_requests_stay_near_the_bound(workload, mode, limit):
    """On mixtures and heavy tails, requests per job stay within the pinned ratio to the bound."""
    row = poll_sim.evaluate(poll_sim.WORKLOADS[workload], mode, (1, 2, 3, 4))
    assert row.ratio <= limit
    assert row.p95_over_mean <= 3.0


def test_the_exact_plan_spends_no_poll_where_nothing_finishes():
    """A well-learned narrow model: one poll just before the runs begin, then dense ones.

    The local rule sqrt(2 c / h) would poll several times before; the exact
    plan knows one poll there is worth less than the delay it saves.
    """
    policy = seeded(jitter=0.0)
    teach(policy, lognormal_runs(400, cv=0.1))
    job = state("running", started_at=0.0)
    first = policy.next_delay(job, 0.0)
    assert 40.0 < first < 55.0  # the runs begin at about 45 s
    later = [policy.next_delay(job, now) for now in (58.0, 60.0, 62.0)]
    assert max(later) < 3.0


def test_the_plan_is_optimal_on_its_grid():
    """No single poll moved a little earlier or later lowers the plan's expected cost."""
    model = RunTimeModel()
    for run in lognormal_runs(400, cv=0.6):
        model.add_exposure(0.0, run)
        model.add_event(run)
    plan = model.plan(0.1, floor=0.5, ceiling=60.0, max_step_chance=0.25)

    def cost(times: list[float]) -> float:
        # Expected polls + delay / 0.1, for polls at *times* (then every 2 s).
        total, previous = 0.0, 0.0
        grid = [*times, *(times[-1] + 2.0 * k for k in range(1, 400))]
        for t in grid:
            steps = 40
            delay = sum(
                (t - (previous + (k + 0.5) * (t - previous) / steps))
                * (
                    model.survival(previous + k * (t - previous) / steps)
                    - model.survival(previous + (k + 1) * (t - previous) / steps)
                )
                for k in range(steps)
            )
            total += model.survival(previous) + delay / 0.1
            previous = t
        return total

    times, now = [], 0.0
    while now < 150.0:
        now += plan.next_poll(now)
        times.append(now)
    best = cost(times)
    for index in range(1, 8):
        for shift in (-0.1, 0.1):
            moved = list(times)
            moved[index] *= 1.0 + shift
            assert cost(moved) >= best * 0.999, (index, shift)


def test_a_plan_leaps_past_its_grids_end_rather_than_poll_there():
    """A job just short of the frontier is not made to poll exactly at it.

    The plan's grid ends at the frontier, with a flat hazard beyond. Were the
    end the only place past it a poll could go, every job would poll there,
    and a batch that pushes its frontier forward as it runs would pay one
    such poll per bin: the cold mixtures spent about a poll per job on it.
    """
    model = RunTimeModel()
    for run in lognormal_runs(400, cv=0.3):
        model.add_exposure(0.0, run)
        model.add_event(run)
    model.add_exposure(0.0, 300.0)  # one job watched far past every finish
    plan = model.plan(0.1, floor=0.5, ceiling=60.0, max_step_chance=0.25)
    end = plan.times[-1]
    run = end - 0.2
    step = plan.next_poll(run)
    assert step > 0.2 + 1.0  # past the end, not at it
    assert step == pytest.approx(plan.tail_spacing, rel=0.5)


def test_a_prior_of_the_same_service_stays_trusted():
    """Warm sessions of the workload the prior was learned on keep trusting it.

    The check against a prior runs after every poll; a Poisson test that
    took the prior's hazard as exact distrusted a prior of the very same
    service in more than half of the sessions of the benchmark's workloads.
    """
    distrusted = 0
    sessions = 0
    for name in ("lognormal cv 0.3", "lognormal cv 1.0", "two modes 30/90 s"):
        workload = poll_sim.WORKLOADS[name]
        for seed in range(1, 5):
            policy = poll_sim.warm_policy(workload, seed, learn_seed=seed + 10_000)
            poll_sim.simulate(policy, workload.draw(random.Random(seed)), workload.slots)
            distrusted += not policy._model(poll_sim.KEY).trusted
            sessions += 1
    assert distrusted <= 1, f"{distrusted} of {sessions} sessions distrusted their prior"


def test_reattached_jobs_are_polled_sensibly_from_their_first_answer():
    """178 re-attached jobs, queued behind 20 slots, are each seen within seconds of finishing.

    The policy had learned a slow queue earlier in the session; a job seen
    queued once gets neither the long queued ceiling nor a leap on that pace.
    A re-attached job seen queued and then running has a known start: it
    teaches the model and is polled by it (before, such jobs taught nothing,
    and waited 3.4 s on average for 5.6 requests each).
    """
    policy = seeded()
    policy._drain = 0.01  # an old, slow queue
    policy._moving_since = 0.0
    rng = random.Random(0)
    runs = [(rng.lognormvariate(2.3, 0.3), 1.0) for _ in range(178)]
    outcome = poll_sim.simulate(policy, runs, 20, attached=True, offset=5.0)
    last = max(finish for _, finish in poll_sim.schedule(runs, 20))
    assert last < 120.0
    assert outcome.delay_max < 10.0
    assert outcome.delay_mean < 1.0
    assert outcome.requests_per_job < 14.0
    assert policy._model(poll_sim.KEY).finished > 100  # they taught the model


def test_a_job_reattached_running_teaches_nothing():
    """A job first seen running after an attach has an unknown age: no lesson from it."""
    policy = seeded()
    job = state("unknown", attached=True)
    job.see(Phase.RUNNING, None, 5.0)
    policy.observe(job, 5.0)
    assert not job.age_known
    assert not policy.finished(job, 9.0, 100.0)
    assert 0 == policy._model("m").finished


def poll_times(policy: AdaptivePolling, run_time: float, key: str = "m") -> list[float]:
    """Return when one running job is polled until it finishes at *run_time*."""
    job = state("running", key=key)
    now, times = 0.0, []
    while now < run_time:
        now += policy.next_delay(job, now)
        times.append(now)
        if now < run_time:
            job.see(Phase.RUNNING, None, now)
            policy.observe(job, now)
    return times


def test_a_job_that_outlives_a_stale_warm_model_backs_off():
    """Warm from 60 s jobs, a 600 s job: the prior is distrusted, then polls back off.

    Where the stale prior expects the finish (40 to 120 s) it polls densely, as
    it should if it were right; once the job has outlived it beyond doubt the
    prior loses its weight, and from 200 s on the job is polled no more than a
    cold one.
    """
    stale = seeded()
    teach(stale, lognormal_runs(200, mean=60.0))
    warm = seeded()
    warm.load_models(stale.export_models())
    warm_times = poll_times(warm, 600.0)
    cold_times = poll_times(seeded(), 600.0)
    assert not warm._model("m").trusted
    late = [t for t in warm_times if t >= 200.0]
    assert len(late) <= len([t for t in cold_times if t >= 200.0]) + 1
    assert len(warm_times) <= 4 * len(cold_times)
