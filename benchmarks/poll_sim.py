"""Poll efficiency in virtual time: the library's own policies against the bound.

A discrete-event simulation drives the library's policy classes (imported,
not copied) the way the engine does (``Engine._fetch``): a job is polled on
``/status`` while it is queued, and while its phase is unknown once a job of
its model has been seen queued in the session; otherwise (running, or a first
poll while nothing of its model was seen queued) on ``/result``. A finish
seen on ``/status`` costs one more request (for the outcome); a finish that
asks for a re-plan pulls the polls of every live job of the key earlier.
Time is virtual, so every figure is exact and the run takes seconds.

For a run-time density f with survival S, no schedule can make fewer than
``(integral of sqrt(f S))^2 / (2 D)`` polls per job that find it unfinished at
a mean detection delay D; every job also needs the poll that sees it done,
so the bound on poll requests is that plus one. Where a batch mixes classes
the policy can tell apart (a known ``scale``), the bound is computed per
class and combined at the best split of the delay. Queued batches are
compared with a fixed poller at the same mean delay instead.

Workloads (200 jobs each, every job submitted at time 0, mean run time
about 60 s): lognormal with CV 0.1, 0.3, 0.6 and 1.0; two- and three-mode
mixtures; a heavy (log-logistic) tail on a third of the jobs; frames 121 and
241 mixed (scale 1 and 2, known to the policy); queued batches whose mean
queue wait is 1, 5 and 20 times the run time. Each runs cold (a new policy)
and warm (a new policy given the models persisted by a session that ran the
same workload with another seed), over several seeds.

Run ``python benchmarks/poll_sim.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runcomfy_async import AdaptivePolling, PollPolicy, PollState
from runcomfy_async._polling import Phase

KEY = "sim/model"

# -- run-time distributions -------------------------------------------------------


class Dist:
    """A run-time distribution: density, survival and a sampler."""

    def pdf(self, t: float) -> float:
        raise NotImplementedError

    def sf(self, t: float) -> float:
        raise NotImplementedError

    def draw(self, rng: random.Random) -> float:
        raise NotImplementedError

    def mean(self) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class LogNormal(Dist):
    mu_mean: float
    cv: float

    @property
    def sigma(self) -> float:
        return math.sqrt(math.log1p(self.cv * self.cv))

    @property
    def mu(self) -> float:
        return math.log(self.mu_mean) - self.sigma**2 / 2

    def pdf(self, t: float) -> float:
        if t <= 0:
            return 0.0
        z = (math.log(t) - self.mu) / self.sigma
        return math.exp(-0.5 * z * z) / (t * self.sigma * math.sqrt(2 * math.pi))

    def sf(self, t: float) -> float:
        if t <= 0:
            return 1.0
        z = (math.log(t) - self.mu) / self.sigma
        return 0.5 * math.erfc(z / math.sqrt(2))

    def draw(self, rng: random.Random) -> float:
        return rng.lognormvariate(self.mu, self.sigma)

    def mean(self) -> float:
        return self.mu_mean


@dataclass(frozen=True)
class LogLogistic(Dist):
    """A heavy tail: survival ``1 / (1 + (t / alpha)^beta)``."""

    alpha: float
    beta: float

    def pdf(self, t: float) -> float:
        if t <= 0:
            return 0.0
        x = (t / self.alpha) ** self.beta
        return self.beta / t * x / (1 + x) ** 2

    def sf(self, t: float) -> float:
        return 1.0 / (1.0 + (max(t, 0.0) / self.alpha) ** self.beta)

    def draw(self, rng: random.Random) -> float:
        u = rng.random()
        return self.alpha * (u / (1 - u)) ** (1 / self.beta)

    def mean(self) -> float:
        b = math.pi / self.beta
        return self.alpha * b / math.sin(b)


@dataclass(frozen=True)
class Mixture(Dist):
    parts: tuple[tuple[float, Dist], ...]

    def pdf(self, t: float) -> float:
        return sum(w * d.pdf(t) for w, d in self.parts)

    def sf(self, t: float) -> float:
        return sum(w * d.sf(t) for w, d in self.parts)

    def draw(self, rng: random.Random) -> float:
        u = rng.random()
        for w, d in self.parts:
            if u < w:
                return d.draw(rng)
            u -= w
        return self.parts[-1][1].draw(rng)

    def mean(self) -> float:
        return sum(w * d.mean() for w, d in self.parts)


def sqrt_fs_integral(dist: Dist, scale: float = 1.0) -> float:
    """Return the integral of sqrt(f S) over run time, for run times times *scale*."""
    # On a log grid: integral of g(t) dt = integral of g(e^u) e^u du.
    lo, hi, n = math.log(1e-3), math.log(1e6), 40_000
    step = (hi - lo) / n
    total = 0.0
    for i in range(n + 1):
        t = math.exp(lo + i * step)
        g = math.sqrt(max(dist.pdf(t), 0.0) * max(dist.sf(t), 0.0)) * t
        total += g * (0.5 if i in (0, n) else 1.0)
    return total * step * math.sqrt(scale)


# -- workloads ----------------------------------------------------------------------


@dataclass(frozen=True)
class JobClass:
    """Jobs the policy can tell apart: a share of the batch, a distribution, a scale hint."""

    share: float
    dist: Dist
    scale: float = 1.0


@dataclass(frozen=True)
class Workload:
    name: str
    classes: tuple[JobClass, ...]
    jobs: int = 200
    queue_factor: float | None = None
    """Mean queue wait over mean run time (None: unlimited slots)."""

    @property
    def mean_run(self) -> float:
        return sum(c.share * c.dist.mean() * c.scale for c in self.classes)

    @property
    def slots(self) -> int | None:
        if self.queue_factor is None:
            return None
        # FIFO through k slots: the mean wait is about (N / k - 1) / 2 runs.
        return max(1, round(self.jobs / (2 * self.queue_factor + 1)))

    def draw(self, rng: random.Random) -> list[tuple[float, float]]:
        """Return (run time, scale hint) for each job, classes interleaved at random."""
        out = []
        for _ in range(self.jobs):
            u = rng.random()
            chosen = self.classes[-1]
            for c in self.classes:
                if u < c.share:
                    chosen = c
                    break
                u -= c.share
            out.append((chosen.dist.draw(rng) * chosen.scale, chosen.scale))
        return out

    def bound_constant(self) -> float:
        """Return B: the bound is B / D polls per job (before the final poll) at mean delay D.

        Per class k with B_k = I_k^2 / 2, the best split of the delay gives
        (sum of share_k sqrt(B_k))^2.
        """
        total = sum(
            c.share * math.sqrt(sqrt_fs_integral(c.dist, c.scale) ** 2 / 2) for c in self.classes
        )
        return total * total


def _ln(cv: float, mean: float = 60.0) -> Dist:
    return LogNormal(mean, cv)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("lognormal cv 0.1", (JobClass(1.0, _ln(0.1)),)),
        Workload("lognormal cv 0.3", (JobClass(1.0, _ln(0.3)),)),
        Workload("lognormal cv 0.6", (JobClass(1.0, _ln(0.6)),)),
        Workload("lognormal cv 1.0", (JobClass(1.0, _ln(1.0)),)),
        Workload(
            "two modes 30/90 s",
            (JobClass(1.0, Mixture(((0.5, _ln(0.15, 30.0)), (0.5, _ln(0.15, 90.0))))),),
        ),
        Workload(
            "three modes 20/60/150 s",
            (
                JobClass(
                    1.0,
                    Mixture(
                        (
                            (1 / 3, _ln(0.15, 20.0)),
                            (1 / 3, _ln(0.15, 60.0)),
                            (1 / 3, _ln(0.15, 150.0)),
                        )
                    ),
                ),
            ),
        ),
        Workload(
            "heavy tail on 1/3",
            (JobClass(1.0, Mixture(((2 / 3, _ln(0.3)), (1 / 3, LogLogistic(60.0, 2.5))))),),
        ),
        Workload(
            "frames 121+241 mixed",
            (JobClass(0.5, _ln(0.3, 40.0), 1.0), JobClass(0.5, _ln(0.3, 40.0), 2.0)),
        ),
        Workload("queued, wait 1x run", (JobClass(1.0, _ln(0.3)),), queue_factor=1.0),
        Workload("queued, wait 5x run", (JobClass(1.0, _ln(0.3)),), queue_factor=5.0),
        Workload("queued, wait 20x run", (JobClass(1.0, _ln(0.3)),), queue_factor=20.0),
    )
}

# -- the simulation ---------------------------------------------------------------


@dataclass
class SimJob:
    index: int
    run: float
    scale: float
    start: float
    finish: float
    state: PollState
    due: float = 0.0
    polls: int = 0
    requests: int = 0
    delay: float = math.nan
    done: bool = False
    cold_polls: int = 0


@dataclass
class Outcome:
    """What one policy cost on one batch."""

    requests: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    cold_polls: list[int] = field(default_factory=list)
    queued_requests: list[int] = field(default_factory=list)

    @property
    def requests_per_job(self) -> float:
        return statistics.fmean(self.requests)

    @property
    def delay_mean(self) -> float:
        return statistics.fmean(self.delays)

    def delay_quantile(self, share: float) -> float:
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]

    @property
    def delay_max(self) -> float:
        return max(self.delays)


def schedule(
    runs: Sequence[tuple[float, float]],
    slots: int | None,
    submitted: Sequence[float] | None = None,
) -> list[tuple[float, float]]:
    """Return (start, finish) of each job through *slots* FIFO slots.

    Jobs are submitted in order, at the times of *submitted* (all at 0 by
    default).
    """
    free = [0.0] * (slots or len(runs))
    out = []
    for index, (run, _) in enumerate(runs):
        start = max(heapq.heappop(free), submitted[index] if submitted else 0.0)
        out.append((start, start + run))
        heapq.heappush(free, start + run)
    return out


def simulate(
    policy: PollPolicy,
    runs: Sequence[tuple[float, float]],
    slots: int | None,
    *,
    key: str = KEY,
    attached: bool = False,
    offset: float = 0.0,
    submitted: Sequence[float] | None = None,
) -> Outcome:
    """Poll the jobs of *runs* under *policy* in virtual time, as the engine does.

    With *attached*, every job is re-attached at time *offset* after its
    submit (its state unknown, polled at once), as ``RunComfy.attach`` does.
    *submitted* gives each job's submit time (all at 0 by default), as a
    real batch's submits spread over its first second or two.
    """
    times = schedule(runs, slots, submitted)
    starts = sorted(s for s, _ in times)
    jobs = []
    at = list(submitted) if submitted else [0.0] * len(runs)
    for i, ((run, scale), (start, finish)) in enumerate(zip(runs, times, strict=True)):
        state = PollState(key=key, scale=scale, submitted_at=offset if attached else at[i])
        if attached:
            state.attached = True
        jobs.append(SimJob(i, run, scale, start, finish, state))
    seq = itertools.count()
    heap: list[tuple[float, int, int]] = []
    for job in jobs:
        if attached:
            job.due = offset
        else:
            now = job.state.submitted_at
            job.due = now + policy.next_delay(job.state, now)
        heapq.heappush(heap, (job.due, next(seq), job.index))
    live = {job.index for job in jobs}
    first_finish_seen = math.inf
    queued_seen = False  # the engine's _queued_models, for this one key
    while heap:
        now, _, index = heapq.heappop(heap)
        job = jobs[index]
        if job.done or now != job.due:
            continue  # superseded by a re-plan
        state = job.state
        job.polls += 1
        job.requests += 1
        if now < first_finish_seen:
            job.cold_polls += 1
        if now >= job.finish:
            on_status = state.phase is Phase.QUEUED or (
                state.phase is Phase.UNKNOWN and queued_seen
            )
            if on_status:
                job.requests += 1  # seen done on /status: one more for the outcome
            job.done = True
            job.delay = now - job.finish
            live.discard(index)
            first_finish_seen = min(first_finish_seen, now)
            # The server's run time: from its submit (acceptance) to its finish.
            if policy.finished(state, now, job.finish - at[index]):
                for other in live:
                    o = jobs[other]
                    due = now + policy.next_delay(o.state, now)
                    if due < o.due:
                        o.due = due
                        heapq.heappush(heap, (due, next(seq), other))
            continue
        if now >= job.start:
            state.see(Phase.RUNNING, None, now)
        else:
            # Jobs ahead in the FIFO queue not yet started (0 = next).
            queued_seen = True
            state.see(Phase.QUEUED, index - bisect.bisect_right(starts, now), now)
        policy.observe(state, now)
        job.due = now + policy.next_delay(state, now)
        heapq.heappush(heap, (job.due, next(seq), index))
    out = Outcome()
    for job in jobs:
        out.requests.append(job.requests)
        out.delays.append(job.delay)
        out.cold_polls.append(job.cold_polls)
    return out


def fixed_at_delay(
    runs: Sequence[tuple[float, float]], slots: int | None, delay: float
) -> tuple[float, float]:
    """Return (requests per job, mean delay) of a fixed poller tuned to mean *delay*.

    Exact for the engine's rules: polls at k x interval after the submit,
    ``/status`` until seen running, except the first polls (all due at once,
    in submit order) while no job has yet been seen queued, which go to
    ``/result``; the interval is found by bisection.
    """
    times = schedule(runs, slots)
    # Jobs before the first one queued at the first poll find theirs on /result.
    on_result = slots if slots is not None else len(times)

    def cost(interval: float) -> tuple[float, float]:
        reqs, delays = 0, 0.0
        for index, (start, finish) in enumerate(times):
            k = max(1, math.ceil(finish / interval))
            reqs += k
            if (k == 1 and index >= on_result) or (k > 1 and (k - 1) * interval < start):
                reqs += 1  # the poll before saw it queued: the finish is seen on /status
            delays += k * interval - finish
        return reqs / len(times), delays / len(times)

    lo, hi = delay * 0.5, delay * 4.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if cost(mid)[1] < delay:
            lo = mid
        else:
            hi = mid
    return cost(math.sqrt(lo * hi))


# -- policies -------------------------------------------------------------------


def cold_policy(seed: int, **settings: Any) -> AdaptivePolling:
    """Return the library's AdaptivePolling with its defaults (jitter seeded)."""
    return AdaptivePolling(rand=random.Random(seed).random, **settings)


def warm_policy(
    workload: Workload, seed: int, *, learn_seed: int, **settings: Any
) -> AdaptivePolling:
    """Return a new policy warmed with the models an earlier session persisted."""
    earlier = cold_policy(learn_seed, **settings)
    simulate(earlier, workload.draw(random.Random(learn_seed)), workload.slots)
    saved = json.loads(json.dumps(earlier.export_models()))  # through real JSON
    policy = cold_policy(seed, **settings)
    policy.load_models(saved)
    return policy


@dataclass
class Row:
    workload: str
    mode: str
    requests_per_job: float
    delay_mean: float
    delay_p95: float
    delay_max: float
    cold_polls: float
    bound: float | None = None
    fixed: float | None = None
    ratio: float = math.nan
    ratio_literal: float | None = None
    target: float = math.nan
    seeds: int = 1
    per_seed: list[float] = field(default_factory=list)

    @property
    def p95_over_mean(self) -> float:
        return self.delay_p95 / self.delay_mean if self.delay_mean > 0 else math.inf

    @property
    def met(self) -> bool:
        return self.ratio <= self.target and self.p95_over_mean <= 3.0


def target(workload: Workload, mode: str) -> float:
    """The issue's targets: against the bound, or against a fixed poller when queued."""
    if workload.queue_factor is None:
        return 1.15 if mode == "cold" else 1.05
    if workload.queue_factor >= 20:
        return 0.1
    if workload.queue_factor >= 5:
        return 0.2
    return math.inf  # no target at 1x: reported only


def evaluate(
    workload: Workload,
    mode: str,
    seeds: Sequence[int],
    make: Callable[[Workload, str, int], PollPolicy] | None = None,
) -> Row:
    """Run *workload* once per seed under a cold or warm policy; pool the jobs."""
    pooled = Outcome()
    fixed_reqs: list[float] = []
    ratios: list[float] = []
    bound_b = workload.bound_constant() if workload.queue_factor is None else None
    for seed in seeds:
        if make is not None:
            policy = make(workload, mode, seed)
        elif mode == "cold":
            policy = cold_policy(seed)
        else:
            policy = warm_policy(workload, seed, learn_seed=seed + 10_000)
        runs = workload.draw(random.Random(seed))
        one = simulate(policy, runs, workload.slots)
        pooled.requests += one.requests
        pooled.delays += one.delays
        pooled.cold_polls += one.cold_polls
        if bound_b is not None:
            ratios.append(one.requests_per_job / (bound_b / one.delay_mean + 1))
        else:
            fixed, _ = fixed_at_delay(runs, workload.slots, one.delay_mean)
            fixed_reqs.append(fixed)
            ratios.append(one.requests_per_job / fixed)
    row = Row(
        workload=workload.name,
        mode=mode,
        requests_per_job=pooled.requests_per_job,
        delay_mean=pooled.delay_mean,
        delay_p95=pooled.delay_quantile(0.95),
        delay_max=pooled.delay_max,
        cold_polls=statistics.fmean(pooled.cold_polls),
        target=target(workload, mode),
        seeds=len(seeds),
        per_seed=ratios,
    )
    if bound_b is not None:
        row.bound = bound_b / row.delay_mean + 1
        row.ratio = row.requests_per_job / row.bound
        row.ratio_literal = row.requests_per_job / (bound_b / row.delay_mean)
    else:
        row.fixed = statistics.fmean(fixed_reqs)
        row.ratio = statistics.fmean(ratios)
    return row


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if math.isinf(value):
        return "-"
    return f"{value:.{digits}f}"


def print_rows(rows: Sequence[Row]) -> None:
    """Print the table the performance page shows."""
    headers = [
        "workload",
        "mode",
        "req/job",
        "bound",
        "fixed",
        "ratio",
        "target",
        "delay mean",
        "p95",
        "worst",
        "p95/mean",
        "cold polls",
        "",
    ]
    table = [
        [
            r.workload,
            r.mode,
            _fmt(r.requests_per_job),
            _fmt(r.bound),
            _fmt(r.fixed),
            _fmt(r.ratio, 3),
            _fmt(r.target),
            _fmt(r.delay_mean),
            _fmt(r.delay_p95),
            _fmt(r.delay_max, 1),
            _fmt(r.p95_over_mean),
            _fmt(r.cold_polls),
            "met" if r.met else "MISSED",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--seeds", type=int, default=10, help="batches per workload and mode (default 10)")
    add("--workloads", help="comma-separated substrings of workload names (default all)")
    add("--modes", default="cold,warm", help="cold, warm or both (default both)")
    add("--json", metavar="PATH", help="write the rows as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chosen = [
        w
        for w in WORKLOADS.values()
        if not args.workloads or any(p in w.name for p in args.workloads.split(","))
    ]
    started = time.process_time()
    rows = [
        evaluate(w, mode, range(1, args.seeds + 1))
        for w in chosen
        for mode in args.modes.split(",")
    ]
    print_rows(rows)
    print(
        "\nreq/job: poll requests per job (the submit is not counted); bound: the fewest"
        " poll requests any schedule needs at the achieved mean delay (including the poll"
        " that sees the finish); fixed: a fixed poller at the same mean delay (queued"
        " batches); delays in seconds, pooled over seeds;"
        f" {time.process_time() - started:.1f} s CPU",
        file=sys.stderr,
    )
    if args.json:
        with Path(args.json).open("w", encoding="utf-8") as handle:
            json.dump({"benchmark": "poll_sim", "rows": [vars(r) for r in rows]}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
