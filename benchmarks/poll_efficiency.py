"""Poll efficiency: requests per job and detection delay, adaptive vs. fixed intervals.

Two workloads against the emulator in another process, time-scaled:

(a) no queue: N jobs submitted at once, unlimited running slots, run times
    lognormal (mean 60 s, CV 0.3 nominal);
(b) queued batch: the same, with 10 running slots, so most jobs wait first.

Each workload runs, one after another and each against a fresh emulator
process: AdaptivePolling (its time constants times the time scale) and
FixedInterval at the peers' intervals (0.1 s fal_client, 0.5 s replicate,
2 s runcomfy-cli, 3 s runcomfy-mcp, 5 s ComfyUI nodes), scaled the same way,
plus one FixedInterval tuned to the adaptive run's mean detection delay
(interval = 2 x that delay). Intervals whose poll rate would saturate the
machine (N jobs / scaled interval > --max-rate) are not run; their request
count and delay are computed from the measured jobs' durations instead.

The key figure is ``ratio``: the adaptive policy's requests per job divided by
what a fixed-interval poller needs for the SAME mean detection delay
(interpolated in log-log space between measured fixed-interval runs).
Targets: <= 0.5 on (a), <= 0.1 on (b). Delays are printed in nominal seconds
(measured seconds / time scale), so they read as real-world seconds.

Run ``python benchmarks/poll_efficiency.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import time
from typing import Any

import anyio
from _common import (
    TOKEN,
    Emulator,
    PollProbe,
    adaptive_settings,
    adaptive_variant,
    api_requests,
    cpu_seconds,
    mean,
    percentile,
    print_table,
    request,
    scaled_adaptive,
    verdict,
    wake_workaround,
    wake_workaround_needed,
    write_json,
)

from runcomfy_async import FixedInterval, Limits, PollPolicy, RunComfy

PEERS = (
    (0.1, "fal_client"),
    (0.5, "replicate"),
    (2.0, "runcomfy-cli"),
    (3.0, "runcomfy-mcp"),
    (5.0, "ComfyUI nodes"),
)
TARGETS = {"a": 0.5, "b": 0.1}
OPEN_RATE = 1e9  # requests/s: no pacing
WORKLOADS = {
    "a": "no queue (unlimited slots)",
    "b": "queued batch",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=200, help="jobs per run (default 200)")
    add("--time-scale", type=float, default=1 / 60, help="default 1/60: mean run 1 s")
    add("--mean", type=float, default=60.0, help="nominal mean run time, s (default 60)")
    add("--cv", type=float, default=0.3, help="run-time coefficient of variation (0.3)")
    add("--slots", type=int, default=10, help="running slots in workload (b) (default 10)")
    add("--workloads", default="ab", help="which workloads: a, b or ab (default ab)")
    add(
        "--max-rate",
        type=float,
        default=1500.0,
        help="poll rate (req/s) above which a "
        "fixed interval is run with fewer jobs (a) or computed, not run (b) (default 1500)",
    )
    add(
        "--min-jobs",
        type=int,
        default=30,
        help="fewest jobs a fixed-interval run of (a) "
        "may use before it is computed instead (default 30)",
    )
    add(
        "--max-slowdown",
        type=int,
        default=4,
        help="workload (b): the tuned fixed interval is run at up to this many times "
        "the time scale when it would saturate at the normal one (default 4)",
    )
    add("--concurrency", type=int, default=32, help="max_concurrent_requests (default 32)")
    add(
        "--warm",
        action="store_true",
        help="also measure AdaptivePolling on a second batch in the same session "
        "(after it learned from a first one); with --real-time, a second session "
        "given the models the first one persisted, on new run times",
    )
    add(
        "--repeat",
        type=int,
        default=3,
        help="AdaptivePolling runs per workload, averaged (default 3; 1 with --quick)",
    )
    add("--seed", type=int, default=1, help="emulator seed (same run times for every policy)")
    add(
        "--quick",
        action="store_true",
        help="a < 30 s run: 60 jobs, time scale 1/120, workload (b) with 6 slots",
    )
    add("--json", metavar="PATH", help="write the figures as JSON")
    add(
        "--real-time",
        action="store_true",
        help="real-time mode: no time scaling, the library's default AdaptivePolling, "
        "three workloads at once (lognormal CV 0.3; frames 121/241 mixed without a scale "
        "hint, i.e. a two-mode mixture; a queued batch through 10 slots), each compared "
        "with the virtual-time simulator (benchmarks/poll_sim.py) on the same run times",
    )
    add("--rt-jobs", type=int, default=100, help="real-time mode: jobs per workload (100)")
    return parser


class Run:
    """One policy on one workload: what it cost and how late it saw each job."""

    def __init__(self, label: str, interval: float | None) -> None:
        self.label = label
        self.interval = interval  # nominal seconds, None for adaptive
        self.computed = False
        self.saturated = False
        self.figures: dict[str, Any] = {}


async def _run_policy(
    args: argparse.Namespace,
    workload: str,
    label: str,
    policy: PollPolicy,
    *,
    warm: bool = False,
    jobs: int | None = None,
    scale: float | None = None,
) -> tuple[dict[str, Any], list[float]]:
    """Run N jobs under *policy* against a fresh emulator; return figures and durations.

    Durations are in seconds of the run's own (scaled) clock; figures in
    nominal seconds. *scale* overrides the time scale (the policy must be
    scaled to match).
    """
    n, scale = jobs or args.jobs, scale or args.time_scale
    slots = args.slots if workload == "b" else None
    emulator = Emulator(
        time_scale=scale,
        slots=slots,
        run_time=f"lognormal:{args.mean},{args.cv}",
        seed=args.seed,
    )
    probe = PollProbe(policy)
    done_at: dict[str, float] = {}
    # No rate limit here, so the throttle's pacing is opened wide: the figures
    # are about the poll policy (an in-step fixed poller would otherwise queue
    # behind the slow start, which peers' clients do not have).
    limits = Limits(
        max_jobs_in_flight=max(n, 1),
        max_concurrent_requests=args.concurrency,
        initial_rate=OPEN_RATE,
        max_rate=OPEN_RATE,
    )
    # Generous: the slowest job of a queued batch, many times over.
    budget = 60.0 + 20 * scale * args.mean * (1 + n / (slots or n)) * (2 if warm else 1)

    def on_done(job: Any) -> None:
        done_at[job.request_id] = time.monotonic()

    async with emulator:
        async with RunComfy(
            TOKEN, base_url=emulator.base_url, limits=limits, polling=probe
        ) as client:
            if args.wake_workaround:
                wake_workaround(client, probe)
            if warm:
                # A first batch to learn from; only the second one is measured.
                await client.run([request(i) for i in range(n)])
                await emulator.reset_stats()
                probe.reset()
            before = client.stats
            emu_cpu0 = cpu_seconds(emulator.pid)
            started = time.monotonic()
            with_timeout = anyio.fail_after(budget)
            with with_timeout:
                batch = client.submit_many([request(n + i if warm else i) for i in range(n)])
                for job in batch:
                    job.add_done_callback(on_done)
                outcomes = await client.gather(batch)
            wall = time.monotonic() - started
            after = client.stats
        emulator_stats = await emulator.stats()
        emulator_jobs = await emulator.jobs()
        emu_cpu = cpu_seconds(emulator.pid) - emu_cpu0
    failures = sum(1 for o in outcomes if isinstance(o, Exception))
    by_id = {job["request_id"]: job for job in emulator_jobs}
    delays, durations, queue_waits = [], [], []
    for rid, at in done_at.items():
        job = by_id.get(rid)
        if job is None or job["finished"] is None:
            continue
        delays.append(at - job["finished"])
        durations.append(job["finished"] - job["created"])
        queue_waits.append(job["started"] - job["created"])
    server = api_requests(emulator_stats)
    client_requests = {
        k: after.requests.get(k, 0) - before.requests.get(k, 0)
        for k in set(after.requests) | set(before.requests)
    }
    server_total = sum(server.values())
    figures = {
        "label": label,
        "jobs": n,
        "failures": failures,
        "requests_per_job": server_total / n,
        "client_requests_per_job": sum(client_requests.values()) / n,
        "polls_per_job": (server["status"] + server["result"]) / n,
        "queued_polls_per_job": probe.queued_polls / n,
        "running_polls_per_job": probe.running_polls / n,
        "cold_running_polls_per_job": probe.cold_running_polls / n,
        "final_polls_per_job": probe.final_polls / n,
        "first_poll_mean": mean(probe.first_poll_after) / scale,
        "delay_mean": mean(delays) / scale,
        "delay_p50": percentile(delays, 0.5) / scale,
        "delay_p95": percentile(delays, 0.95) / scale,
        "delay_max": max(delays, default=math.nan) / scale,
        "queue_wait_mean": mean(queue_waits) / scale,
        "duration_mean": mean(durations) / scale,
        "wall_seconds": wall,
        "peak_rate": server_total / wall if wall > 0 else math.nan,
        "server_requests": server,
        "client_requests": client_requests,
        "emulator_cpu_seconds": emu_cpu,
        "rate_limited": after.rate_limited - before.rate_limited,
    }
    return figures, durations


def _average(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the numeric figures of repeated runs (other fields from the first)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        values = [run[key] for run in runs]
        if not (isinstance(value, int) and len(set(values)) == 1):
            out[key] = mean(float(v) for v in values)
    return out


def _model(durations: list[float], interval: float) -> tuple[float, float]:
    """Requests per job and mean delay (both scaled seconds in) of a fixed poller.

    A fixed poller polls at ``interval, 2 interval, ...`` after the submit; a
    job lasting T (submit to finish) is seen at poll ``ceil(T / interval)``.
    """
    polls = [max(1, math.ceil(t / interval)) for t in durations]
    delays = [p * interval - t for p, t in zip(polls, durations, strict=True)]
    return 1 + mean(polls), mean(delays)


def _model_p95(durations: list[float], interval: float) -> float:
    polls = [max(1, math.ceil(t / interval)) for t in durations]
    return percentile([p * interval - t for p, t in zip(polls, durations, strict=True)], 0.95)


def _interpolate(points: list[tuple[float, float]], delay: float) -> float:
    """Requests per job of a fixed poller at mean *delay*, from measured (delay, req) points.

    Log-log interpolation between the two points that bracket *delay*; outside
    them, the nearest point scaled by the fixed poller's law (polls ~ 1/delay).
    """
    points = sorted(p for p in points if p[0] > 0 and p[1] > 0)
    if not points or not delay > 0:
        return math.nan
    for (d0, r0), (d1, r1) in itertools.pairwise(points):
        if d0 <= delay <= d1:
            if d1 == d0:
                return r0
            w = (math.log(delay) - math.log(d0)) / (math.log(d1) - math.log(d0))
            return math.exp(math.log(r0) + w * (math.log(r1) - math.log(r0)))
    d, r = min(points, key=lambda p: abs(math.log(p[0] / delay)))
    polls = max(r - 1.0, 0.0)
    return 1.0 + polls * d / delay


async def _workload(args: argparse.Namespace, workload: str) -> dict[str, Any]:
    n, scale = args.jobs, args.time_scale
    print(
        f"\n== workload ({workload}): {WORKLOADS[workload]}, {n} jobs, "
        f"slots {args.slots if workload == 'b' else 'unlimited'}, time scale {scale:.5g}",
        flush=True,
    )
    adaptive = scaled_adaptive(scale)
    print(f"  AdaptivePolling: {adaptive_variant(adaptive)}, constants x {scale:.5g}", flush=True)
    runs: list[dict[str, Any]] = []
    repeats: list[dict[str, Any]] = []
    for index in range(args.repeat):
        # A fresh policy each time: a cold start is what a new session sees.
        one, durations = await _run_policy(
            args, workload, f"AdaptivePolling #{index + 1}", scaled_adaptive(scale)
        )
        repeats.append(one)
        print(
            f"  AdaptivePolling #{index + 1}: {one['requests_per_job']:.2f} req/job, "
            f"delay {one['delay_mean']:.2f} s",
            flush=True,
        )
    ours = _average(repeats)
    ours["label"] = "AdaptivePolling" + (f" (mean of {len(repeats)})" if len(repeats) > 1 else "")
    ours["kind"] = "adaptive"
    ours["repeats"] = repeats
    runs.append(ours)
    if args.warm:
        warm, _ = await _run_policy(
            args, workload, "AdaptivePolling (warm)", scaled_adaptive(scale), warm=True
        )
        warm["kind"] = "adaptive-warm"
        runs.append(warm)
        print(
            f"  AdaptivePolling (warm): {warm['requests_per_job']:.2f} req/job, "
            f"delay {warm['delay_mean']:.2f} s",
            flush=True,
        )

    tuned = 2 * ours["delay_mean"]
    intervals = [(i, f"fixed {i:g} s ({who})") for i, who in PEERS]
    intervals.append((tuned, f"fixed {tuned:.2f} s (same delay)"))
    measured: list[tuple[float, float]] = []
    for interval, label in intervals:
        scaled = interval * scale
        model_req, model_delay = _model(durations, scaled)
        # A fixed poller learns nothing and, without a queue, jobs do not
        # interact: fewer jobs give the same per-job figures at a lower rate.
        jobs = n if workload == "b" else min(n, int(args.max_rate * scaled))
        run_scale = scale
        if workload == "b" and interval == tuned:
            # The queue couples the jobs, so slow the clock instead: the same
            # seed gives the same nominal run times at any time scale.
            slowdown = math.ceil(n / scaled / args.max_rate)
            if 1 < slowdown <= args.max_slowdown:
                run_scale = scale * slowdown
        rate = jobs / (interval * run_scale)
        row: dict[str, Any] = {
            "label": label,
            "kind": "fixed",
            "interval": interval,
            "model_requests_per_job": model_req,
            "model_delay_mean": model_delay / scale,
            "expected_rate": n / scaled,
        }
        if rate > args.max_rate or jobs < min(n, args.min_jobs):
            row.update(
                computed=True,
                jobs=n,
                requests_per_job=model_req,
                delay_mean=model_delay / scale,
                delay_p95=_model_p95(durations, scaled) / scale,
            )
            print(f"  {label}: computed ({n / scaled:.0f} req/s would saturate)", flush=True)
        else:
            shown = label if run_scale == scale else f"{label} at time scale {run_scale:.4g}"
            figures, _ = await _run_policy(
                args,
                workload,
                shown,
                FixedInterval(interval=interval * run_scale),
                jobs=jobs,
                scale=run_scale,
            )
            row.update(figures)
            # (Its model figure holds as is: same nominal durations and interval.)
            row["label"], row["computed"], row["time_scale"] = shown, False, run_scale
            # Fewer polls than the model means the machine could not keep up.
            row["saturated"] = figures["polls_per_job"] < 0.8 * (model_req - 1)
            if not row["saturated"]:
                measured.append((figures["delay_mean"], figures["requests_per_job"]))
            print(
                f"  {shown}: {figures['requests_per_job']:.2f} req/job, "
                f"delay {figures['delay_mean']:.2f} s ({jobs} jobs)",
                flush=True,
            )
        runs.append(row)

    same = _interpolate(measured, ours["delay_mean"])
    # The model's fixed poller at our delay: bisect the interval (delay grows with it).
    lo, hi = 1e-4 * scale, 1e4 * scale
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if _model(durations, mid)[1] / scale < ours["delay_mean"]:
            lo = mid
        else:
            hi = mid
    model_same = _model(durations, lo)[0]
    source = "measured"
    if math.isnan(same):
        same, source = model_same, "computed"
    ratio = ours["requests_per_job"] / same if same else math.nan
    result = {
        "workload": workload,
        "description": WORKLOADS[workload],
        "jobs": n,
        "slots": args.slots if workload == "b" else None,
        "time_scale": scale,
        "adaptive_settings_nominal": adaptive_settings(scaled_adaptive(1.0)),
        "adaptive_class": adaptive_variant(adaptive),
        "runs": runs,
        "fixed_requests_at_our_delay": same,
        "fixed_requests_at_our_delay_source": source,
        "fixed_requests_at_our_delay_model": model_same,
        "ratio": ratio,
        "ratio_model": ours["requests_per_job"] / model_same if model_same else math.nan,
        "target": TARGETS[workload],
    }
    result["ratio_per_repeat"] = [
        run["requests_per_job"] / _interpolate(measured, run["delay_mean"])
        if measured
        else math.nan
        for run in repeats
    ]
    if args.warm:
        warm_run = runs[1]
        warm_same = _interpolate(measured, warm_run["delay_mean"])
        result["ratio_warm"] = warm_run["requests_per_job"] / warm_same if warm_same else math.nan
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    rows = []
    for run in result["runs"]:
        note = "computed" if run.get("computed") else ("SATURATED" if run.get("saturated") else "")
        rows.append(
            [
                run["label"],
                run.get("jobs"),
                run["requests_per_job"],
                run.get("model_requests_per_job"),
                run.get("polls_per_job"),
                run.get("queued_polls_per_job"),
                run.get("running_polls_per_job"),
                run.get("cold_running_polls_per_job"),
                run["delay_mean"],
                run["delay_p95"],
                run.get("first_poll_mean"),
                run.get("wall_seconds"),
                note,
            ]
        )
    print_table(
        [
            "policy",
            "jobs",
            "req/job",
            "model",
            "polls/job",
            "queued",
            "running",
            "cold",
            "delay mean s",
            "delay p95 s",
            "1st poll s",
            "wall s",
            "note",
        ],
        rows,
        title=f"workload ({result['workload']}): {result['description']}, {result['jobs']} jobs "
        "\n(delays and 1st poll in nominal s; model = req/job a fixed poller needs, computed "
        "from the jobs' measured durations; queued/running = polls that saw that phase; "
        "cold = running polls made before any job had finished)",
    )
    for run in result["runs"]:
        server, client = run["requests_per_job"], run.get("client_requests_per_job")
        if client is not None and abs(client - server) > 0.005 * server:
            print(f"note: {run['label']}: client counted {client:.2f} req/job, server {server:.2f}")
    ours = result["runs"][0]
    print(
        f"\nfixed-interval poller at our mean delay ({ours['delay_mean']:.2f} s): "
        f"{result['fixed_requests_at_our_delay']:.2f} req/job "
        f"{result['fixed_requests_at_our_delay_source']} "
        f"(model: {result['fixed_requests_at_our_delay_model']:.2f})"
    )
    print(
        f"RATIO ({result['workload']}) adaptive / fixed at same delay = {result['ratio']:.3f} "
        f"(model {result['ratio_model']:.3f}); target <= {result['target']} -> "
        f"{verdict(result['ratio'], result['target'])}"
    )
    if len(result["ratio_per_repeat"]) > 1:
        spread = ", ".join(f"{r:.3f}" for r in result["ratio_per_repeat"])
        print(f"ratio of each AdaptivePolling run (against its own delay): {spread}")
    if "ratio_warm" in result:
        print(f"RATIO ({result['workload']}, warm) = {result['ratio_warm']:.3f}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    args.wake_workaround = await wake_workaround_needed()
    results = {}
    for workload in args.workloads:
        results[workload] = await _workload(args, workload)
    summary = [
        [
            f"({w}) {r['description']}",
            r["runs"][0]["requests_per_job"],
            r["fixed_requests_at_our_delay"],
            r["runs"][0]["delay_mean"],
            r["ratio"],
            r["target"],
            verdict(r["ratio"], r["target"]),
        ]
        for w, r in results.items()
    ]
    print_table(
        [
            "workload",
            "ours req/job",
            "fixed req/job @ same delay",
            "delay s",
            "ratio",
            "target",
            "",
        ],
        summary,
        title="summary",
    )
    return results


SIM_JITTERS = 20
"""Jitter seeds the simulator runs on each real-time batch's run times."""

REAL_TIME = {
    "lognormal cv 0.3": {"run_time": "lognormal:60,0.3", "slots": None, "frames": False},
    "two modes (frames 121/241, no hint)": {
        "run_time": "lognormal:60,0.3",
        "slots": None,
        "frames": True,
    },
    "queued batch, 10 slots, 30 s runs": {
        "run_time": "lognormal:30,0.3",
        "slots": 10,
        "frames": False,
    },
}


async def _real_time_batch(
    spec: dict[str, Any], n: int, seed: int, policy: Any
) -> tuple[dict[str, float], list[tuple[float, float]], list[float], int, int, float]:
    """One batch in real time: (per-job delay, runs, submit offsets, polls, failures, wall)."""
    from runcomfy_async import ModelRequest  # noqa: PLC0415

    emulator = Emulator(time_scale=1.0, slots=spec["slots"], run_time=spec["run_time"], seed=seed)
    done_at: dict[str, float] = {}

    def on_done(job: Any) -> None:
        done_at[job.request_id] = time.monotonic()

    def make(i: int) -> ModelRequest:
        payload: dict[str, Any] = {"prompt": f"benchmark job {i}"}
        if spec["frames"] and i % 2:
            payload["frames"] = 241  # the emulator runs it twice as long
        return ModelRequest(request(i).model_id, payload)

    async with emulator:
        # model_cache=False: the session starts from exactly the policy given
        # (a user cache left by other runs would make a "cold" run warm).
        async with RunComfy(
            TOKEN, base_url=emulator.base_url, polling=policy, model_cache=False
        ) as client:
            started = time.monotonic()
            batch = client.submit_many([make(i) for i in range(n)])
            for job in batch:
                job.add_done_callback(on_done)
            outcomes = await client.gather(batch)
            wall = time.monotonic() - started
        server = api_requests(await emulator.stats())
        jobs = await emulator.jobs()
    by_id = {job["request_id"]: job for job in jobs}
    delays: dict[str, float] = {}
    for rid, at in done_at.items():
        job = by_id.get(rid)
        if job is not None and job["finished"] is not None:
            delays[rid] = at - job["finished"]
    ordered = sorted(jobs, key=lambda j: j["created"])
    runs = [(job["finished"] - job["started"], 1.0) for job in ordered]
    first = ordered[0]["created"] if ordered else 0.0
    offsets = [job["created"] - first for job in ordered]
    failures = sum(1 for o in outcomes if isinstance(o, Exception))
    return delays, runs, offsets, server["status"] + server["result"], failures, wall


async def _real_time_one(
    args: argparse.Namespace, name: str, spec: dict[str, Any]
) -> list[dict[str, Any]]:
    """One workload in real time, cold (and warm); then the simulator on the same run times."""
    import poll_sim  # noqa: PLC0415 - only this mode needs it

    from runcomfy_async import AdaptivePolling  # noqa: PLC0415

    n = args.rt_jobs
    key = request(0).model_id
    policy = AdaptivePolling()
    rounds = [("cold", args.seed, policy)]
    if args.warm:
        rounds.append(("warm", args.seed + 1, None))
    rows: list[dict[str, Any]] = []
    first_runs: list[tuple[float, float]] = []
    first_offsets: list[float] = []
    for mode, seed, given in rounds:
        session = given
        if session is None:
            # A new session given the models the cold one persisted.
            session = AdaptivePolling()
            session.load_models(json.loads(json.dumps(policy.export_models())))
        delays, runs, offsets, polls, failures, wall = await _real_time_batch(
            spec, n, seed, session
        )

        def sim_policy(
            jitter: int,
            mode: str = mode,
            earlier: list[tuple[float, float]] = first_runs,
            at: list[float] = first_offsets,
        ) -> Any:
            fresh = poll_sim.cold_policy(jitter)
            if mode == "warm":
                learner = poll_sim.cold_policy(jitter + 100)
                poll_sim.simulate(learner, earlier, spec["slots"], key=key, submitted=at)
                fresh.load_models(json.loads(json.dumps(learner.export_models())))
            return fresh

        # The simulator on the very same run times and submit times, over
        # SIM_JITTERS jitter seeds: one real run is one draw of the jitter,
        # and a cold batch's mean delay rests on its first finishers, so the
        # simulator's spread over seeds says how far one run may stray.
        sims = [
            poll_sim.simulate(sim_policy(jitter), runs, spec["slots"], key=key, submitted=offsets)
            for jitter in range(1, SIM_JITTERS + 1)
        ]
        sim_polls = mean(o.requests_per_job for o in sims)
        sim_delay = mean(o.delay_mean for o in sims)
        sim_p95 = mean(o.delay_quantile(0.95) for o in sims)
        spread = sorted(o.delay_mean for o in sims)
        values = list(delays.values())
        row: dict[str, Any] = {
            "workload": name,
            "mode": mode,
            "jobs": n,
            "failures": failures,
            "wall_seconds": wall,
            "submit_spread_seconds": max(offsets) - min(offsets) if offsets else 0.0,
            "poll_requests_per_job": polls / n,
            "delay_mean": mean(values),
            "delay_p95": percentile(values, 0.95),
            "delay_max": max(values, default=math.nan),
            "sim_poll_requests_per_job": sim_polls,
            "sim_delay_mean": sim_delay,
            "sim_delay_p95": sim_p95,
            "sim_delay_mean_p10": percentile(spread, 0.10),
            "sim_delay_mean_p90": percentile(spread, 0.90),
            "requests_vs_sim": polls / n / sim_polls - 1,
            "delay_vs_sim": mean(values) / sim_delay - 1,
        }
        if spec["slots"] is not None:
            fixed, _ = poll_sim.fixed_at_delay(runs, spec["slots"], row["delay_mean"])
            row["fixed_at_same_delay"] = fixed
            row["ratio_vs_fixed"] = polls / n / fixed
        rows.append(row)
        first_runs, first_offsets = runs, offsets
        print(f"  {name} ({mode}): done in {wall:.0f} s", flush=True)
    return rows


async def real_time(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the real-time workloads side by side (each with its own emulator process)."""
    rows: list[dict[str, Any]] = []

    async def one(name: str, spec: dict[str, Any]) -> None:
        rows.extend(await _real_time_one(args, name, spec))

    async with anyio.create_task_group() as group:
        for name, spec in REAL_TIME.items():
            group.start_soon(one, name, spec)
    print_table(
        [
            "workload",
            "mode",
            "jobs",
            "poll req/job",
            "sim req/job",
            "diff",
            "delay mean s",
            "sim delay s",
            "diff",
            "sim 10-90 %",
            "p95 s",
            "sim p95 s",
            "worst s",
            "vs fixed",
        ],
        [
            [
                r["workload"],
                r["mode"],
                r["jobs"],
                r["poll_requests_per_job"],
                r["sim_poll_requests_per_job"],
                f"{100 * r['requests_vs_sim']:+.1f} %",
                r["delay_mean"],
                r["sim_delay_mean"],
                f"{100 * r['delay_vs_sim']:+.1f} %",
                f"{r['sim_delay_mean_p10']:.2f}-{r['sim_delay_mean_p90']:.2f}",
                r["delay_p95"],
                r["sim_delay_p95"],
                r["delay_max"],
                r.get("ratio_vs_fixed"),
            ]
            for r in rows
        ],
        title="real time (no scaling, library defaults) against the simulator on the same "
        "run times",
    )
    return rows


def main() -> int:
    args = _parser().parse_args()
    if args.real_time:
        started = time.monotonic()
        rows = asyncio.run(real_time(args))
        print(f"\ntotal {time.monotonic() - started:.0f} s")
        write_json(args.json, {"benchmark": "poll_efficiency", "mode": "real-time", "rows": rows})
        return 0
    if args.quick:
        args.jobs, args.time_scale, args.slots = 60, 1 / 120, 6
        args.max_slowdown = min(args.max_slowdown, 2)
        args.repeat = 1
    args.workloads = [w for w in "ab" if w in args.workloads]
    started = time.monotonic()
    results = asyncio.run(main_async(args))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    write_json(
        args.json, {"benchmark": "poll_efficiency", "options": vars(args), "workloads": results}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
