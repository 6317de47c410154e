"""Chaos: a large batch against an emulator whose every fault is on at once.

The emulator runs in another process (``EmulatorProcess``) with
``Faults.chaos(rate)``: the rate split evenly over every fault it has (5xx,
HTML bodies, dropped connections before and after processing, 429s with and
without ``Retry-After``, stray 429s, slow answers, malformed bodies and
malformed HTTP, hangs before and after acceptance, unknown status words,
foreign request ids, empty file names). One client session submits N jobs
(default 1,000) and waits for all of them; the same batch runs fault-free
first, in the same run, as the baseline.

Time is compressed: the emulator runs at ``--time-scale`` (nominal 60 s jobs
last 60 x scale real seconds) and every time constant of the client is
scaled by the same factor (timeouts, retry backoff and budget, cancel
timeout, the polling policy's constants), so the run is the real thing,
faster. Figures per row:

* ``lost``: jobs that never resolved, or resolved with something other than
  a result or one of the library's typed errors (a bug);
* ``unreported``: jobs the server made (and bills) that the client neither
  knows by request id nor reports as uncertain;
* ``twice``: submit keys the server accepted more than once (paid twice);
* ``uncertain``: jobs ended with ``SubmissionUncertainError``, and ``billed``
  of those, the ones the server in fact created;
* ``hangs``: jobs not resolved ``--guard`` times the baseline's wall time
  after the batch started (the batch is then abandoned and closed);
* ``req/job``: API requests the emulator received per job;
* ``wall`` and ``ratio``: the batch's wall time, and over the baseline's.

Targets: 0 lost, 0 unreported, 0 twice, 0 hangs; ratio <= 1.5 at 3 %.

Run ``python benchmarks/chaos.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
from collections import Counter
from typing import Any

import anyio
from _common import MODEL, TOKEN, api_requests, print_table, scaled_adaptive, verdict, write_json

from runcomfy_async import (
    JobResult,
    Limits,
    ModelRequest,
    RetryPolicy,
    RunComfy,
    RunComfyError,
    SubmissionUncertainError,
    Timeouts,
)
from runcomfy_async.testing import EmulatorProcess, Faults, submit_key

TARGET_RATIO = 1.5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=1000, help="jobs per row (default 1000)")
    add("--rates", default="0.03,0.15", help="chaos rates to run after the baseline")
    add("--time-scale", type=float, default=0.1, help="emulator and client time scale (0.1)")
    add("--run-time", default="lognormal:60,0.3", help="nominal run times (lognormal:60,0.3)")
    add("--failure-rate", type=float, default=0.02, help="jobs that fail on the server (0.02)")
    add("--concurrency", type=int, default=32, help="max_concurrent_requests (default 32)")
    add("--seed", type=int, default=1, help="the emulator's seed (default 1)")
    add("--guard", type=float, default=5.0, help="hang guard: x baseline wall time (5)")
    add(
        "--exclude",
        action="append",
        default=[],
        metavar="FAULT",
        help="leave a fault out of the chaos rows (repeatable)",
    )
    add("--quick", action="store_true", help="a < 1 min run: 300 jobs, 3 %% only")
    add("--json", metavar="PATH", help="write the figures as JSON")
    return parser


def _client(base_url: str, scale: float, concurrency: int) -> RunComfy:
    """A client with the library's defaults, every time constant times *scale*."""
    defaults, retry = Timeouts(), RetryPolicy()
    assert retry.timeout is not None  # noqa: S101 - the library's default has a budget
    return RunComfy(
        TOKEN,
        base_url=base_url,
        limits=Limits(max_concurrent_requests=concurrency),
        timeouts=Timeouts(
            connect=defaults.connect * scale,
            read=defaults.read * scale,
            total=defaults.total * scale,
        ),
        retry=RetryPolicy(
            initial=retry.initial * scale,
            maximum=retry.maximum * scale,
            max_retry_after=retry.max_retry_after * scale,
            timeout=retry.timeout * scale,
        ),
        polling=scaled_adaptive(scale),
        cancel_timeout=10.0 * scale,
        model_cache=False,
    )


def _payload(row: str, i: int) -> dict[str, object]:
    return {"prompt": f"chaos {row} job {i}", "seed": i}


async def _row(args: argparse.Namespace, rate: float, guard: float) -> dict[str, Any]:
    label = "fault-free" if rate == 0 else f"chaos {rate:.0%}"
    faults = (
        Faults()
        if rate == 0
        else Faults.chaos(rate, exclude=args.exclude, base=Faults(slow_seconds=5.0))
    )
    emulator = EmulatorProcess(
        token=TOKEN,
        time_scale=args.time_scale,
        seed=args.seed,
        failure_rate=args.failure_rate,
        record=False,
        faults=faults,
        extra_args=["--run-time", args.run_time],
    )
    row = label.replace(" ", "-")
    payloads = [_payload(row, i) for i in range(args.jobs)]
    async with emulator:
        client = _client(emulator.base_url, args.time_scale, args.concurrency)
        started = time.monotonic()
        async with client:
            jobs = client.submit_many(ModelRequest(MODEL, p) for p in payloads)
            # A guard, not a deadline: jobs still open after it are hangs.
            with anyio.move_on_after(guard):
                await client.gather(jobs)
            hangs = sum(1 for job in jobs if not job.done())
            wall = time.monotonic() - started
            client_stats = client.stats
        stats = await asyncio.to_thread(emulator.stats)
        accepted = await asyncio.to_thread(emulator.accepted_submits)
        server = await asyncio.to_thread(emulator._admin, "GET", "/_emulator/jobs")
    assert isinstance(server, list)  # noqa: S101 - the emulator's own answer
    server_ids = {job["request_id"] for job in server}
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    lost = uncertain = billed = results = 0
    known = set()
    for job, payload in zip(jobs, payloads, strict=True):
        if job.request_id in server_ids:
            known.add(job.request_id)
        error = job.exception() if job.done() else None
        if not job.done():
            continue  # counted as a hang
        if error is None:
            results += isinstance(job.result(), JobResult)
            continue
        if type(error) is RunComfyError:  # the base class alone: an engine bug
            lost += 1
        errors[type(error).__name__] += 1
        examples.setdefault(type(error).__name__, str(error)[:200])
        if isinstance(error, SubmissionUncertainError):
            uncertain += 1
            billed += submit_key(MODEL, payload) in accepted
    unreported = len(server_ids - known) - billed
    requests = sum(api_requests(stats).values())
    return {
        "label": label,
        "rate": rate,
        "jobs": args.jobs,
        "results": results,
        "lost": lost,
        "unreported": unreported,
        "twice": sum(1 for count in accepted.values() if count > 1),
        "uncertain": uncertain,
        "billed": billed,
        "hangs": hangs,
        "requests_per_job": requests / args.jobs,
        "wall_seconds": wall,
        "errors": dict(errors),
        "error_examples": examples,
        "requests": api_requests(stats),
        "server_jobs": len(server_ids),
        "client_retries": client_stats.retries,
        "client_rate_limited": client_stats.rate_limited,
        "client_rate_at_end": client_stats.rate,
    }


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    baseline = math.inf
    for rate in [0.0, *args.rates]:
        guard = args.guard * baseline if math.isfinite(baseline) else 600.0
        print(f"  running {'fault-free' if rate == 0 else f'chaos {rate:.0%}'}...", flush=True)
        row = await _row(args, rate, guard)
        if rate == 0:
            baseline = row["wall_seconds"]
        row["ratio"] = row["wall_seconds"] / baseline
        rows.append(row)
        print(
            f"    {row['wall_seconds']:.1f} s, errors {row['errors']}; retries "
            f"{row['client_retries']}, 429s {row['client_rate_limited']}, rate at end "
            f"{row['client_rate_at_end']:.0f}/s",
            flush=True,
        )
        for name, text in row["error_examples"].items():
            print(f"      e.g. {name}: {text}", flush=True)
    print_table(
        [
            "row",
            "jobs",
            "results",
            "lost",
            "unreported",
            "twice",
            "uncertain",
            "billed",
            "hangs",
            "req/job",
            "wall s",
            "ratio",
            "",
        ],
        [
            [
                r["label"],
                r["jobs"],
                r["results"],
                r["lost"],
                r["unreported"],
                r["twice"],
                r["uncertain"],
                r["billed"],
                r["hangs"],
                r["requests_per_job"],
                r["wall_seconds"],
                r["ratio"],
                verdict(r["ratio"], TARGET_RATIO) if 0 < r["rate"] <= 0.03 else "",
            ]
            for r in rows
        ],
        title=f"chaos: {args.jobs} jobs a row, time scale {args.time_scale:g}, run time "
        f"{args.run_time}; targets 0 lost/unreported/twice/hangs, ratio <= 1.5 at 3 %",
    )
    return rows


def main() -> int:
    args = _parser().parse_args()
    # A chaos run logs every fault it meets; the table is the report.
    logging.getLogger("runcomfy_async").setLevel(logging.CRITICAL)
    if args.quick:
        args.jobs, args.rates = 300, "0.03"
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    started = time.monotonic()
    rows = asyncio.run(_main(args))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    write_json(
        args.json,
        {
            "benchmark": "chaos",
            "options": vars(args),
            "rows": rows,
            "targets": {"lost": 0, "unreported": 0, "twice": 0, "hangs": 0, "ratio": TARGET_RATIO},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
