"""Throughput under a hidden rate limit: accepted requests/s as a share of the limit.

The emulator (another process) answers 429 over a hidden limit of R requests
per second (a token bucket ``--rate-burst`` deep), with ``Retry-After`` on
(whole seconds, as a real server sends them) or off. One client keeps demand
far above R for ``--duration`` seconds, so its AIMD throttle has to find and
hold the limit:

* ``api``: ``--tasks`` tasks call ``client.api.result`` in a loop on a few
  long-running jobs, all through the client's shared throttle;
* ``batch``: ``--batch-jobs`` long-running jobs polled by the scheduler with a
  fast ``FixedInterval`` (``--batch-interval``), the path a real batch takes.

Figures are read from the emulator's own counters, sampled every second, over
the steady state: from ``--warmup`` seconds after the client starts to the
end. ``accepted/R`` is accepted (non-429) requests per second over R (target
>= 90%); ``429 share`` is rejected / all API requests (target <= 5%).

Run ``python benchmarks/rate_limit.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import math
import time
from typing import Any

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

from runcomfy_async import FixedInterval, Limits, RunComfy, RunComfyError

TARGET_SHARE = 0.90
TARGET_REJECTED = 0.05


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
    add("--modes", default="api,batch", help="api, batch or both (default api,batch)")
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
    add("--quick", action="store_true", help="a < 30 s run: api mode only, 10 s rows, 3 s warm-up")
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
        # Diagnostics only (private state, may vanish): how often the rate was cut.
        aimd = getattr(getattr(client, "_throttle", None), "_aimd", None)
        decreases = getattr(aimd, "decreases", None)
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
        "rate_decreases": decreases,
        "timeline": per_second,
    }


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    wake = await wake_workaround_needed()
    rows = []
    for mode in args.modes:
        for retry_after in (True, False):
            label = f"{mode}, Retry-After {'on' if retry_after else 'off'}"
            print(f"  running {label} ({args.duration:g} s)...", flush=True)
            row = await _row(args, mode, retry_after, wake)
            row["label"] = label
            rows.append(row)
            print(
                f"    accepted {row['share_of_limit']:.1%} of R, 429s "
                f"{row['rejected_share']:.1%}, rate cuts {row['rate_decreases']}",
                flush=True,
            )
            print(
                "    accepted/s each second: "
                + " ".join(f"{t['accepted_per_s']:.0f}" for t in row["timeline"])
            )
            print(
                "    client rate each second: "
                + " ".join(f"{t['client_rate']:.0f}" for t in row["timeline"]),
                flush=True,
            )
    print_table(
        [
            "row",
            "accepted/s",
            "accepted/R",
            "429 share",
            "client rate mean",
            "min",
            "max",
            "window s",
            "",
            "",
        ],
        [
            [
                r["label"],
                r["accepted_per_second"],
                f"{r['share_of_limit']:.1%}",
                f"{r['rejected_share']:.2%}",
                r["client_rate_mean"],
                r["client_rate_min"],
                r["client_rate_max"],
                r["window_seconds"],
                verdict(r["share_of_limit"], TARGET_SHARE, at_most=False),
                verdict(r["rejected_share"], TARGET_REJECTED),
            ]
            for r in rows
        ],
        title=f"rate limit: hidden limit R = {args.limit:g} req/s (burst {args.rate_burst:g}), "
        f"steady state after {args.warmup:g} s; targets accepted/R >= 90%, 429 share <= 5%",
    )
    return rows


def main() -> int:
    args = _parser().parse_args()
    # Closing a batch row leaves its (endless) jobs running on the emulator,
    # which the client rightly warns about; that warning is noise here.
    logging.getLogger("runcomfy_async").setLevel(logging.ERROR)
    if args.quick:
        args.modes, args.duration, args.warmup = "api", 10.0, 3.0
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
            "targets": {"share_of_limit": TARGET_SHARE, "rejected_share": TARGET_REJECTED},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
