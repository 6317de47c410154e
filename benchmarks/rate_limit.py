"""Throughput under a hidden rate limit: accepted requests/s as a share of the limit.

The emulator (another process) answers 429 over a hidden limit of R requests
per second (a token bucket ``--rate-burst`` deep), with ``Retry-After`` on
(whole seconds, as a real server sends them) or off. One client keeps demand
far above R for ``--duration`` seconds, so its AIMD throttle has to find and
hold the limit:

* ``api``: ``--tasks`` tasks call ``client.api.result`` in a loop on a few
  long-running jobs, all through the client's shared throttle;
* ``batch``: ``--batch-jobs`` long-running jobs polled by the scheduler with a
  fast ``FixedInterval`` (``--batch-interval``), the path a real batch takes;
* ``multi``: ``--processes`` client processes (each as in ``api``) on one
  emulator and one token, no coordinator: each one's share, and the total;
* ``stray``: no limit at all, but ``--stray-share`` of requests answered 429
  at random (``Retry-After: 1``): a batch of ``--stray-jobs`` jobs, its wall
  time over the same batch without them (target <= 1.5x);
* ``inflight``: ``--inflight-jobs`` jobs (default 10,000) under a hidden
  ``--inflight-limit`` (500 req/s), default client: how many jobs were in
  flight at the peak, and when (polls must not starve submits).

Figures are read from the emulator's own counters, sampled every second, over
the steady state: from ``--warmup`` seconds after the client starts to the
end. ``accepted/R`` is accepted (non-429) requests per second over R (target
>= 90%); ``429 share`` is rejected / all API requests (target <= 5%).
``rate cuts`` counts the controller's congestion events (and cuts undone as
stray 429s), read from its signals (private state: diagnostics only).

Run ``python benchmarks/rate_limit.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from _common import (
    TOKEN,
    Emulator,
    PollProbe,
    api_requests,
    mean,
    print_table,
    request,
    verdict,
    wake_workaround,
    wake_workaround_needed,
    write_json,
)

from runcomfy_async import (
    FixedInterval,
    JobFinished,
    JobSubmitted,
    Limits,
    RunComfy,
    RunComfyError,
)

TARGET_SHARE = 0.90
TARGET_REJECTED = 0.05
TARGET_STRAY_RATIO = 1.5
MODES = ("api", "batch", "multi", "stray", "inflight")
HERE = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--limit", type=float, default=200.0, help="hidden limit R, requests/s (default 200)")
    add(
        "--rate-burst",
        type=float,
        default=20.0,
        help="its bucket depth (default 20: 0.1 s of the limit; 1 is the strictest)",
    )
    add("--duration", type=float, default=40.0, help="seconds of demand per row (default 40)")
    add("--warmup", type=float, default=10.0, help="seconds left out at the start (default 10)")
    add(
        "--modes",
        default=",".join(MODES),
        help=f"any of {', '.join(MODES)} (default: all)",
    )
    add("--tasks", type=int, default=64, help="api mode: calling tasks (default 64)")
    add("--concurrency", type=int, default=32, help="max_concurrent_requests (default 32)")
    add("--batch-jobs", type=int, default=200, help="batch mode: jobs (default 200)")
    add(
        "--batch-interval",
        type=float,
        default=0.2,
        help="batch mode: poll interval, s (default 0.2, so demand = jobs/interval = 1000/s)",
    )
    add(
        "--time-scale",
        type=float,
        default=1.0,
        help="the emulator's time scale (default 1: "
        "Retry-After in whole seconds; any other value sends it to the millisecond)",
    )
    add("--processes", type=int, default=3, help="multi mode: client processes (default 3)")
    add("--stray-share", type=float, default=0.03, help="stray mode: share of 429s (0.03)")
    add("--stray-jobs", type=int, default=1000, help="stray mode: jobs (default 1000)")
    add("--stray-run-time", default="fixed:5", help="stray mode: run times (fixed:5)")
    add("--inflight-jobs", type=int, default=10_000, help="inflight mode: jobs (10000)")
    add("--inflight-limit", type=float, default=500.0, help="inflight mode: limit (500)")
    add(
        "--inflight-run-time",
        default="lognormal:60,0.3",
        help="inflight mode: run times (lognormal:60,0.3)",
    )
    add(
        "--inflight-duration",
        type=float,
        default=240.0,
        help="inflight mode: stop after this many seconds (default 240)",
    )
    add(
        "--quick",
        action="store_true",
        help="a < 1 min run: api, multi and stray, 10 s rows, 3 s warm-up, 300 stray jobs",
    )
    # Internal: one client process of multi mode.
    add("--child", action="store_true", help=argparse.SUPPRESS)
    add("--base-url", help=argparse.SUPPRESS)
    add("--start-at", type=float, help=argparse.SUPPRESS)
    add("--index", type=int, default=0, help=argparse.SUPPRESS)
    add("--json", metavar="PATH", help="write the figures as JSON")
    return parser


async def _sample(emulator: Emulator, client: RunComfy, started: float) -> dict[str, Any]:
    stats = await emulator.stats()
    counts = api_requests(stats)
    return {
        "t": time.monotonic() - started,
        "total": sum(counts.values()),
        "rejected": int(stats["rejected"]),
        "client_rate": client.stats.rate,
    }


async def _row(
    args: argparse.Namespace, mode: str, retry_after: bool, wake: bool
) -> dict[str, Any]:
    faults = [] if retry_after else ["retry_after=none"]
    emulator = Emulator(
        time_scale=args.time_scale,
        run_time="fixed:100000",  # no job ends during the run
        rate_limit=args.limit,
        rate_burst=args.rate_burst,
        faults=faults,
    )
    limits = Limits(
        max_jobs_in_flight=max(args.batch_jobs, 1), max_concurrent_requests=args.concurrency
    )
    policy = PollProbe(FixedInterval(interval=args.batch_interval), count=False)
    samples: list[dict[str, Any]] = []
    errors = 0
    async with (
        emulator,
        RunComfy(
            TOKEN, base_url=emulator.base_url, limits=limits, polling=policy, cancel_timeout=1.0
        ) as client,
    ):
        signals = count_signals(client)
        if wake:
            wake_workaround(client, policy)
        stop = asyncio.Event()
        started = time.monotonic()
        samples.append(await _sample(emulator, client, started))

        async def sampler() -> None:
            # Every second on the second, independent of the demand's progress.
            tick = started
            while True:
                tick += 1.0
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
                samples.append(await _sample(emulator, client, started))

        sampling = asyncio.create_task(sampler())
        tasks: list[asyncio.Task[None]] = []
        if mode == "api":

            async def caller(ids: list[str]) -> None:
                nonlocal errors
                cycle = itertools.cycle(ids)
                while not stop.is_set():
                    try:
                        await client.api.result(next(cycle))
                    except RunComfyError:  # noqa: PERF203 - retries exhausted on 429s: go on
                        errors += 1

            # A few jobs to ask about; their submits are part of the demand.
            ids: list[str] = []
            for i in range(8):
                with contextlib.suppress(RunComfyError):
                    ids.append((await client.api.submit(request(i))).request_id)
            tasks = [asyncio.create_task(caller(ids)) for _ in range(args.tasks)]
        else:
            client.submit_many([request(i) for i in range(args.batch_jobs)])
        await asyncio.sleep(max(0.0, started + args.duration + 0.01 - time.monotonic()))
        sampling.cancel()
        stop.set()
        for task in [sampling, *tasks]:
            task.cancel()
        await asyncio.gather(sampling, *tasks, return_exceptions=True)
        client_stats = client.stats
    # The steady-state window: the first sample at or after the warm-up, to the last.
    window = [s for s in samples if s["t"] >= args.warmup - 1e-6]
    first, last = window[0], window[-1]
    span = last["t"] - first["t"]
    total = last["total"] - first["total"]
    rejected = last["rejected"] - first["rejected"]
    accepted_rate = (total - rejected) / span if span > 0 else math.nan
    per_second = []
    for a, b in itertools.pairwise(samples):
        dt = b["t"] - a["t"]
        accepted = (b["total"] - a["total"]) - (b["rejected"] - a["rejected"])
        per_second.append(
            {
                "t": round(b["t"], 2),
                "accepted_per_s": accepted / dt,
                "rejected": b["rejected"] - a["rejected"],
                "client_rate": round(b["client_rate"], 1),
            }
        )
    rates = [s["client_rate"] for s in window]
    return {
        "mode": mode,
        "retry_after": retry_after,
        "limit": args.limit,
        "window_seconds": span,
        "accepted_per_second": accepted_rate,
        "share_of_limit": accepted_rate / args.limit,
        "rejected_share": rejected / total if total else math.nan,
        "requests": total,
        "rejected": rejected,
        "client_rate_mean": mean(rates),
        "client_rate_min": min(rates, default=math.nan),
        "client_rate_max": max(rates, default=math.nan),
        "client_rate_limited": client_stats.rate_limited,
        "client_retries": client_stats.retries,
        "calls_failed_after_retries": errors,
        "rate_decreases": _cuts(signals),
        "signals": dict(signals),
        "timeline": per_second,
    }


def count_signals(client: RunComfy) -> Counter[str]:
    """Count the rate controller's signals (cut, refused, undone...) on *client*.

    Diagnostics only: it wraps a private method of the default admission,
    and counts nothing if that is gone.
    """
    signals: Counter[str] = Counter()
    admission = getattr(client, "_admission", None)
    follow = getattr(admission, "_follow", None)
    if follow is None:
        return signals

    def counting(signal: Any, now: float) -> None:
        signals[getattr(signal, "value", str(signal))] += 1
        follow(signal, now)

    admission._follow = counting  # type: ignore[union-attr]
    return signals


def _cuts(signals: Counter[str]) -> str:
    cuts = signals["cut"] + signals["refused"]
    undone = signals["undone"]
    return f"{cuts}" + (f" ({undone} undone)" if undone else "")


# -- multi: several client processes on one emulator ------------------------------


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    """One client process of multi mode: api-mode demand, its own counts each second."""
    limits = Limits(max_concurrent_requests=args.concurrency)
    samples: list[dict[str, Any]] = []
    errors = 0
    async with RunComfy(
        TOKEN, base_url=args.base_url, limits=limits, cancel_timeout=1.0, model_cache=False
    ) as client:
        signals = count_signals(client)
        ids: list[str] = []
        for i in range(8):
            with contextlib.suppress(RunComfyError):
                payload = request(args.index * 1000 + i)
                ids.append((await client.api.submit(payload)).request_id)
        stop = asyncio.Event()

        async def caller(offset: int) -> None:
            nonlocal errors
            cycle = itertools.cycle(ids[offset % len(ids) :] + ids[: offset % len(ids)])
            while not stop.is_set():
                try:
                    await client.api.result(next(cycle))
                except RunComfyError:  # noqa: PERF203 - retries spent on 429s: go on
                    errors += 1

        def sample() -> dict[str, Any]:
            stats = client.stats
            return {
                "at": time.monotonic(),
                "total": stats.total_requests,
                "rejected": stats.rate_limited,
                "rate": stats.rate,
            }

        await asyncio.sleep(max(0.0, args.start_at - time.monotonic()))
        tasks = [asyncio.create_task(caller(i)) for i in range(args.tasks)]
        tick = args.start_at
        samples.append(sample())
        while tick < args.start_at + args.duration:
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            samples.append(sample())
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"index": args.index, "samples": samples, "errors": errors, "signals": dict(signals)}


def _window_rate(samples: list[dict[str, Any]], start: float) -> tuple[float, int, int]:
    """Accepted/s, requests and 429s between the first sample at or after *start* and the last."""
    window = [s for s in samples if s["at"] >= start - 1e-6]
    first, last = window[0], window[-1]
    span = last["at"] - first["at"]
    total = last["total"] - first["total"]
    rejected = last["rejected"] - first["rejected"]
    return ((total - rejected) / span if span > 0 else math.nan), total, rejected


async def _multi_row(args: argparse.Namespace) -> dict[str, Any]:
    emulator = Emulator(
        time_scale=args.time_scale,
        run_time="fixed:100000",
        rate_limit=args.limit,
        rate_burst=args.rate_burst,
    )
    async with emulator:
        start_at = time.monotonic() + 3.0  # time for every child to start up
        command = [
            sys.executable,
            str(HERE / "rate_limit.py"),
            "--child",
            "--base-url",
            emulator.base_url,
            "--start-at",
            repr(start_at),
            "--duration",
            repr(args.duration),
            "--tasks",
            str(args.tasks),
            "--concurrency",
            str(args.concurrency),
        ]
        children = [
            await asyncio.create_subprocess_exec(
                *command, "--index", str(i), stdout=subprocess.PIPE
            )
            for i in range(args.processes)
        ]
        samples: list[dict[str, Any]] = []
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        tick = start_at
        while tick < start_at + args.duration + 1.0:
            stats = await emulator.stats()
            samples.append(
                {
                    "at": time.monotonic(),
                    "total": sum(api_requests(stats).values()),
                    "rejected": int(stats["rejected"]),
                }
            )
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        outputs = [json.loads((await child.communicate())[0]) for child in children]
    window_start = start_at + args.warmup
    accepted, total, rejected = _window_rate(samples, window_start)
    shares = []
    for output in outputs:
        own, own_total, own_rejected = _window_rate(output["samples"], window_start)
        shares.append(
            {
                "index": output["index"],
                "accepted_per_second": own,
                "share_of_limit": own / args.limit,
                "rejected_share": own_rejected / own_total if own_total else math.nan,
                "rate_decreases": _cuts(Counter(output["signals"])),
                "calls_failed_after_retries": output["errors"],
            }
        )
    fair = [s["accepted_per_second"] for s in shares]
    return {
        "mode": "multi",
        "label": f"multi, {args.processes} processes",
        "retry_after": True,
        "limit": args.limit,
        "accepted_per_second": accepted,
        "share_of_limit": accepted / args.limit,
        "rejected_share": rejected / total if total else math.nan,
        "requests": total,
        "rejected": rejected,
        "processes": shares,
        "fairness_min_over_max": min(fair) / max(fair) if fair and max(fair) > 0 else math.nan,
        "rate_decreases": ", ".join(s["rate_decreases"] for s in shares),
    }


# -- stray: 429s at random, no limit ----------------------------------------------------


async def _stray_run(args: argparse.Namespace, share: float) -> dict[str, Any]:
    faults = [f"stray_429_rate={share}"] if share > 0 else []
    emulator = Emulator(run_time=args.stray_run_time, faults=faults)
    limits = Limits(max_jobs_in_flight=args.stray_jobs)
    async with (
        emulator,
        RunComfy(TOKEN, base_url=emulator.base_url, limits=limits, model_cache=False) as client,
    ):
        signals = count_signals(client)
        started = time.monotonic()
        rates: list[float] = []
        submitted: list[int] = []

        async def sampler() -> None:
            while True:
                rates.append(round(client.stats.rate))
                submitted.append(client.stats.requests.get("submit", 0))
                await asyncio.sleep(1.0)

        sampling = asyncio.create_task(sampler())
        outcomes = await client.run([request(i) for i in range(args.stray_jobs)])
        wall = time.monotonic() - started
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        stats = await emulator.stats()
        client_stats = client.stats
    total = sum(api_requests(stats).values())
    return {
        "share": share,
        "wall_seconds": wall,
        "requests": total,
        "rejected": int(stats["rejected"]),
        "rejected_share": int(stats["rejected"]) / total if total else math.nan,
        "failed": sum(1 for o in outcomes if isinstance(o, Exception)),
        "client_rate_limited": client_stats.rate_limited,
        "client_rate_at_end": client_stats.rate,
        "rate_decreases": _cuts(signals),
        "signals": dict(signals),
        "client_rate_each_second": rates,
        "submits_each_second": submitted,
    }


async def _stray_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    clean = await _stray_run(args, 0.0)
    stray = await _stray_run(args, args.stray_share)
    rows = []
    for run in (clean, stray):
        run["label"] = f"stray 429s {run['share']:.1%}, {args.stray_jobs} jobs"
        run["ratio"] = run["wall_seconds"] / clean["wall_seconds"]
        rows.append(run)
    return rows


# -- inflight: does a rate-bound batch keep growing? ---------------------------------


async def _inflight_row(args: argparse.Namespace) -> dict[str, Any]:
    n = args.inflight_jobs
    emulator = Emulator(
        run_time=args.inflight_run_time,
        rate_limit=args.inflight_limit,
        rate_burst=args.inflight_limit / 10,
    )
    in_flight = peak = submitted = 0
    peak_at = all_submitted_at = math.nan
    started = time.monotonic()

    def hook(event: object) -> None:
        nonlocal in_flight, peak, peak_at, submitted, all_submitted_at
        if isinstance(event, JobSubmitted):
            in_flight += 1
            submitted += 1
            if in_flight > peak:
                peak, peak_at = in_flight, time.monotonic() - started
            if submitted == n:
                all_submitted_at = time.monotonic() - started
        elif isinstance(event, JobFinished) and event.job.request_id is not None:
            in_flight -= 1

    limits = Limits(max_jobs_in_flight=n)
    timeline: list[dict[str, Any]] = []
    async with (
        emulator,
        RunComfy(
            TOKEN,
            base_url=emulator.base_url,
            limits=limits,
            hooks=[hook],
            cancel_timeout=1.0,
            model_cache=False,
        ) as client,
    ):
        signals = count_signals(client)
        started = time.monotonic()
        jobs = client.submit_many(request(i) for i in range(n))

        async def sampler() -> None:
            while True:
                await asyncio.sleep(5.0)
                stats = await emulator.stats()
                timeline.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "in_flight": in_flight,
                        "submitted": submitted,
                        "requests": sum(api_requests(stats).values()),
                        "rejected": int(stats["rejected"]),
                    }
                )

        sampling = asyncio.create_task(sampler())
        with anyio.move_on_after(args.inflight_duration):
            await client.gather(jobs)
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        wall = time.monotonic() - started
        stats = await emulator.stats()
        done = sum(1 for job in jobs if job.done())
    total = sum(api_requests(stats).values())
    return {
        "mode": "inflight",
        "label": f"in flight, {n} jobs, limit {args.inflight_limit:g}",
        "jobs": n,
        "peak_in_flight": peak,
        "peak_at_seconds": peak_at,
        "all_submitted_at_seconds": all_submitted_at,
        "submitted": submitted,
        "done_in_time": done,
        "wall_seconds": wall,
        "accepted_share_of_limit": (total - int(stats["rejected"])) / wall / args.inflight_limit,
        "rejected_share": int(stats["rejected"]) / total if total else math.nan,
        "requests_per_job": total / n,
        "rate_decreases": _cuts(signals),
        "timeline": timeline,
    }


def _print_timeline(row: dict[str, Any]) -> None:
    print(
        f"    accepted {row['share_of_limit']:.1%} of R, 429s "
        f"{row['rejected_share']:.1%}, rate cuts {row['rate_decreases']}",
        flush=True,
    )
    if "timeline" in row:
        print(
            "    accepted/s each second: "
            + " ".join(f"{t['accepted_per_s']:.0f}" for t in row["timeline"])
        )
        print(
            "    client rate each second: "
            + " ".join(f"{t['client_rate']:.0f}" for t in row["timeline"]),
            flush=True,
        )


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    wake = await wake_workaround_needed()
    rows: list[dict[str, Any]] = []
    for mode in [m for m in args.modes if m in ("api", "batch")]:
        for retry_after in (True, False):
            label = f"{mode}, Retry-After {'on' if retry_after else 'off'}"
            print(f"  running {label} ({args.duration:g} s)...", flush=True)
            row = await _row(args, mode, retry_after, wake)
            row["label"] = label
            rows.append(row)
            _print_timeline(row)
    if "multi" in args.modes:
        print(f"  running multi, {args.processes} processes ({args.duration:g} s)...", flush=True)
        row = await _multi_row(args)
        rows.append(row)
        _print_timeline(row)
        for share in row["processes"]:
            print(
                f"    process {share['index']}: {share['share_of_limit']:.1%} of R, "
                f"429s {share['rejected_share']:.2%}, rate cuts {share['rate_decreases']}",
                flush=True,
            )
    if rows:
        _limit_table(args, rows)
    stray: list[dict[str, Any]] = []
    if "stray" in args.modes:
        print(f"  running stray 429s ({args.stray_jobs} jobs, clean then stray)...", flush=True)
        stray = await _stray_rows(args)
        for run in stray:
            print(
                f"    {run['label']}: client rate each second "
                + " ".join(str(r) for r in run["client_rate_each_second"])
                + "; submits sent by then "
                + " ".join(str(n) for n in run["submits_each_second"]),
                flush=True,
            )
        print_table(
            ["row", "wall s", "ratio", "requests", "429s", "429 share", "rate cuts", "failed", ""],
            [
                [
                    r["label"],
                    r["wall_seconds"],
                    r["ratio"],
                    r["requests"],
                    r["rejected"],
                    f"{r['rejected_share']:.2%}",
                    r["rate_decreases"],
                    r["failed"],
                    verdict(r["ratio"], TARGET_STRAY_RATIO) if r["share"] else "",
                ]
                for r in stray
            ],
            title=f"stray 429s: no limit, {args.stray_share:.1%} of requests answered 429 at "
            f"random (Retry-After: 1); target wall time <= {TARGET_STRAY_RATIO}x the clean run",
        )
    inflight: list[dict[str, Any]] = []
    if "inflight" in args.modes:
        print(
            f"  running in flight ({args.inflight_jobs} jobs, limit {args.inflight_limit:g}, "
            f"at most {args.inflight_duration:g} s)...",
            flush=True,
        )
        row = await _inflight_row(args)
        inflight.append(row)
        print(
            "    in flight every 5 s: " + " ".join(str(t["in_flight"]) for t in row["timeline"]),
            flush=True,
        )
        print_table(
            [
                "row",
                "peak in flight",
                "at s",
                "all sent at s",
                "done",
                "accepted/R",
                "429 share",
                "req/job",
                "wall s",
            ],
            [
                [
                    row["label"],
                    row["peak_in_flight"],
                    row["peak_at_seconds"],
                    row["all_submitted_at_seconds"],
                    row["done_in_time"],
                    f"{row['accepted_share_of_limit']:.1%}",
                    f"{row['rejected_share']:.2%}",
                    row["requests_per_job"],
                    row["wall_seconds"],
                ]
            ],
            title="in flight under a hidden limit: 0.1.0 peaked at 2,381 of 10,000 "
            "(polls starved submits)",
        )
    return rows + stray + inflight


def _limit_table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print_table(
        [
            "row",
            "accepted/s",
            "accepted/R",
            "429 share",
            "client rate mean",
            "min",
            "max",
            "rate cuts",
            "",
            "",
        ],
        [
            [
                r["label"],
                r["accepted_per_second"],
                f"{r['share_of_limit']:.1%}",
                f"{r['rejected_share']:.2%}",
                r.get("client_rate_mean"),
                r.get("client_rate_min"),
                r.get("client_rate_max"),
                r["rate_decreases"],
                verdict(r["share_of_limit"], TARGET_SHARE, at_most=False),
                verdict(r["rejected_share"], TARGET_REJECTED),
            ]
            for r in rows
        ],
        title=f"rate limit: hidden limit R = {args.limit:g} req/s (burst {args.rate_burst:g}), "
        f"steady state after {args.warmup:g} s; targets accepted/R >= 90%, 429 share <= 5%",
    )


def main() -> int:
    args = _parser().parse_args()
    if args.child:
        logging.getLogger("runcomfy_async").setLevel(logging.CRITICAL)
        print(json.dumps(asyncio.run(_child(args))))
        return 0
    # Closing a batch row leaves its (endless) jobs running on the emulator,
    # which the client rightly warns about; that warning is noise here.
    logging.getLogger("runcomfy_async").setLevel(logging.ERROR)
    if args.quick:
        args.modes, args.duration, args.warmup = "api,multi,stray", 10.0, 3.0
        args.stray_jobs = 300
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    started = time.monotonic()
    rows = asyncio.run(_main(args))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    write_json(
        args.json,
        {
            "benchmark": "rate_limit",
            "options": vars(args),
            "rows": rows,
            "targets": {
                "share_of_limit": TARGET_SHARE,
                "rejected_share": TARGET_REJECTED,
                "stray_ratio": TARGET_STRAY_RATIO,
            },
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
