"""Scale: 10,000 jobs in flight in one session, against a bare aiohttp loop.

Two sides, each in a FRESH client subprocess against a fresh emulator process
(unlimited running slots, a fixed run time long enough that every job is in
flight at once):

* library: one ``RunComfy`` session submits N jobs (``max_jobs_in_flight=N``,
  ``max_concurrent_requests=C``) and waits for all of them, with the default
  AdaptivePolling (or ``--policy fixed:SECONDS``);
* bare: plain aiohttp, no library: C worker tasks, the same N submits, then
  ``/result`` polls on a fixed interval (timers via ``loop.call_at``), stopping
  at exactly the library's number of polls, so both sides make the same
  number of exchanges of the same kinds.

Figures per side: client CPU time (``time.process_time()`` of the client
process, from the first submit to the last answer) per HTTP exchange; peak
RSS (``ru_maxrss``); the longest event-loop stall (a task sleeping 10 ms and
recording how late it wakes); the peak number of jobs in flight.
Targets: CPU per exchange <= 1.5x bare; peak RSS < 200 MB; stall < 100 ms.

Run ``python benchmarks/scale.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    MODEL,
    TOKEN,
    Emulator,
    PollProbe,
    StallMonitor,
    api_requests,
    cpu_seconds,
    peak_rss_mb,
    print_table,
    verdict,
    wake_workaround,
    wake_workaround_needed,
    write_json,
)

HERE = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=10_000, help="jobs in flight (default 10000)")
    add("--run-time", type=float, default=30.0, help="each job's run time, s (default 30)")
    add("--concurrency", type=int, default=64, help="max_concurrent_requests (default 64)")
    add("--policy", default="adaptive", help="adaptive (default) or fixed:SECONDS")
    add(
        "--bare-jitter",
        type=float,
        default=0.1,
        help="share of the bare loop's poll interval drawn at random, so its polls "
        "spread like the library's (AdaptivePolling's jitter; default 0.1)",
    )
    add("--quick", action="store_true", help="a < 30 s run: 1000 jobs of 8 s")
    add("--json", metavar="PATH", help="write the figures as JSON")
    # Internal: run one side in this (child) process.
    add("--child", choices=("library", "bare"), help=argparse.SUPPRESS)
    add("--base-url", help=argparse.SUPPRESS)
    add("--polls", type=int, default=0, help=argparse.SUPPRESS)
    add("--status-polls", type=int, default=0, help=argparse.SUPPRESS)
    add("--wake", action="store_true", help=argparse.SUPPRESS)
    return parser


# -- the library side ---------------------------------------------------------------


async def _library(args: argparse.Namespace) -> dict[str, Any]:
    from runcomfy_async import (  # noqa: PLC0415 - the bare child must not import it
        FixedInterval,
        JobFinished,
        JobSubmitted,
        Limits,
        ModelRequest,
        RunComfy,
    )

    if args.policy.startswith("fixed:"):
        policy: Any = FixedInterval(interval=float(args.policy.split(":", 1)[1]), jitter=0.1)
    else:
        from runcomfy_async import AdaptivePolling  # noqa: PLC0415

        policy = AdaptivePolling()
    probe = PollProbe(policy, count=False)
    limits = Limits(max_jobs_in_flight=args.jobs, max_concurrent_requests=args.concurrency)
    in_flight = peak = 0

    def hook(event: object) -> None:
        nonlocal in_flight, peak
        if isinstance(event, JobSubmitted):
            in_flight += 1
            peak = max(peak, in_flight)
        elif isinstance(event, JobFinished):
            in_flight -= 1

    requests = [ModelRequest(MODEL, {"prompt": f"benchmark job {i}"}) for i in range(args.jobs)]
    async with (
        StallMonitor() as monitor,
        RunComfy(
            TOKEN, base_url=args.base_url, limits=limits, polling=probe, hooks=[hook]
        ) as client,
    ):
        if args.wake:
            wake_workaround(client, probe)
        cpu0, wall0 = time.process_time(), time.monotonic()
        outcomes = await client.run(requests)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        stats = client.stats
    failures = sum(1 for o in outcomes if isinstance(o, Exception))
    return {
        "side": "library",
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "requests": dict(stats.requests),
        "exchanges": stats.total_requests,
        "peak_in_flight": peak,
        "failures": failures,
        "worst_stall_ms": monitor.worst * 1000,
        "stalls_over_50ms": monitor.late_over_50ms,
        "worst_stalls": monitor.worst_stalls(),
        "peak_rss_mb": peak_rss_mb(),
    }


# -- the bare side ------------------------------------------------------------------


async def _bare(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415

    n, jitter = args.jobs, args.bare_jitter
    budget = {"status": args.status_polls, "result": args.polls}
    # Poll every job at a fixed interval chosen to need about the same number
    # of polls per job as the library made; the budgets make it exact. Like
    # the library, a job's first poll asks /status and later ones /result.
    per_job = sum(budget.values()) / n if n else 1.0
    interval = args.run_time / max(per_job - 1.0, 0.5)
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Accept": "application/json",
        "User-Agent": "bare-aiohttp-benchmark",
    }
    submit_url = f"{args.base_url}/v1/models/{MODEL}"
    sent = {"submit": 0, "status": 0, "result": 0}
    booked = {"status": 0, "result": 0}  # polls timed or queued, not yet sent
    loop = asyncio.get_running_loop()
    work: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    for i in range(n):
        work.put_nowait(("submit", i))
    in_flight = peak = 0
    finished: list[str] = []
    seen: set[str] = set()
    done = asyncio.Event()

    def book(rid: str, delay: float, kind: str) -> None:
        if sent[kind] + booked[kind] >= budget[kind]:
            kind = "result" if kind == "status" else "status"
            if sent[kind] + booked[kind] >= budget[kind]:
                return
        booked[kind] += 1
        if delay and jitter:
            delay *= 1.0 + jitter * (2.0 * random.random() - 1.0)
        loop.call_later(delay, work.put_nowait, (kind, rid))

    def check_done() -> None:
        if sent["submit"] < n:
            return
        if sent["status"] >= budget["status"] and sent["result"] >= budget["result"]:
            done.set()
        elif in_flight == 0 and not any(booked.values()) and finished:
            # Every job seen finished with budget left: spend it on re-polls.
            for kind in ("status", "result"):
                for i in range(budget[kind] - sent[kind]):
                    book(finished[i % len(finished)], 0.0, kind)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal in_flight, peak
        while True:
            kind, item = await work.get()
            if kind == "submit":
                body = json.dumps({"prompt": f"benchmark job {item}"}).encode()
                async with session.post(
                    submit_url, data=body, headers={**headers, "Content-Type": "application/json"}
                ) as response:
                    data = json.loads(await response.read())
                sent["submit"] += 1
                in_flight += 1
                peak = max(peak, in_flight)
                book(data["request_id"], interval, "status")
            else:
                booked[kind] -= 1
                url = f"{args.base_url}/v1/requests/{item}/{kind}"
                params = {"include_cost": "true"} if kind == "result" else None
                async with session.get(url, params=params, headers=headers) as response:
                    data = json.loads(await response.read())
                sent[kind] += 1
                status = data.get("status")
                if status in {"in_queue", "in_progress"}:
                    book(item, interval, "result")
                elif kind == "status":
                    book(item, 0.0, "result")  # finished: fetch the outcome
                elif item not in seen:
                    seen.add(item)
                    finished.append(item)
                    in_flight -= 1
            check_done()

    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    async with StallMonitor() as monitor, aiohttp.ClientSession(connector=connector) as session:
        cpu0, wall0 = time.process_time(), time.monotonic()
        workers = [asyncio.create_task(worker(session)) for _ in range(args.concurrency)]
        await done.wait()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return {
        "side": "bare",
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "requests": sent,
        "exchanges": sum(sent.values()),
        "peak_in_flight": peak,
        "failures": 0,
        "poll_interval": interval,
        "worst_stall_ms": monitor.worst * 1000,
        "stalls_over_50ms": monitor.late_over_50ms,
        "worst_stalls": monitor.worst_stalls(),
        "peak_rss_mb": peak_rss_mb(),
    }


def _child(args: argparse.Namespace) -> int:
    runner = _library if args.child == "library" else _bare
    result = asyncio.run(runner(args))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the parent ---------------------------------------------------------------------


async def _side(
    args: argparse.Namespace, side: str, counts: dict[str, int], wake: bool
) -> dict[str, Any]:
    """Run one side in a fresh client process against a fresh emulator."""
    emulator = Emulator(run_time=f"fixed:{args.run_time}")
    async with emulator:
        cmd = [
            sys.executable,
            str(HERE / "scale.py"),
            "--child",
            side,
            "--base-url",
            emulator.base_url,
            "--jobs",
            str(args.jobs),
            "--run-time",
            repr(args.run_time),
            "--concurrency",
            str(args.concurrency),
            "--policy",
            args.policy,
            "--polls",
            str(counts.get("result", 0)),
            "--bare-jitter",
            repr(args.bare_jitter),
            "--status-polls",
            str(counts.get("status", 0)),
        ]
        if wake:
            cmd.append("--wake")
        emu_cpu0 = cpu_seconds(emulator.pid)
        process = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, cwd=str(HERE))
        out, _ = await process.communicate()
        emu_cpu = cpu_seconds(emulator.pid) - emu_cpu0
        server = api_requests(await emulator.stats())
    lines = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
        raise RuntimeError(f"the {side} side failed (exit {process.returncode})")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["server_requests"] = server
    result["emulator_cpu_seconds"] = emu_cpu
    result["cpu_us_per_exchange"] = result["cpu_seconds"] / result["exchanges"] * 1e6
    return result


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    wake = await wake_workaround_needed()
    print(
        f"scale: {args.jobs} jobs of {args.run_time:g} s, concurrency {args.concurrency}, "
        f"policy {args.policy}",
        flush=True,
    )
    library = await _side(args, "library", {}, wake)
    print(
        f"  library: {library['exchanges']} exchanges in {library['wall_seconds']:.1f} s",
        flush=True,
    )
    bare = await _side(args, "bare", library["requests"], wake)
    print(f"  bare:    {bare['exchanges']} exchanges in {bare['wall_seconds']:.1f} s", flush=True)
    ratio = library["cpu_us_per_exchange"] / bare["cpu_us_per_exchange"]
    rows = [
        [
            side["side"],
            side["exchanges"],
            "/".join(str(side["requests"].get(k, 0)) for k in ("submit", "status", "result")),
            side["peak_in_flight"],
            side["cpu_seconds"],
            side["cpu_us_per_exchange"],
            side["peak_rss_mb"],
            side["worst_stall_ms"],
            side["wall_seconds"],
            side["emulator_cpu_seconds"],
        ]
        for side in (library, bare)
    ]
    print_table(
        [
            "side",
            "exchanges",
            "submit/status/result",
            "peak in flight",
            "cpu s",
            "cpu us/exchange",
            "peak RSS MB",
            "worst stall ms",
            "wall s",
            "emulator cpu s",
        ],
        rows,
        title=f"scale: {args.jobs} jobs in flight (each side in a fresh client process)",
    )
    summary = [
        ["CPU per exchange, library / bare", ratio, "<= 1.5", verdict(ratio, 1.5)],
        [
            "peak RSS of the library process, MB",
            library["peak_rss_mb"],
            "< 200",
            verdict(library["peak_rss_mb"], 200),
        ],
        [
            "longest event-loop stall, ms",
            library["worst_stall_ms"],
            "< 100",
            verdict(library["worst_stall_ms"], 100),
        ],
        [
            "jobs in flight at once (peak)",
            library["peak_in_flight"],
            f"= {args.jobs}",
            "ok" if library["peak_in_flight"] == args.jobs else "MISS",
        ],
    ]
    print_table(["figure", "value", "target", ""], summary, title="summary")
    for side in (library, bare):
        stalls = ", ".join(
            f"{s['ms']:.0f} ms at {s['at_s']:.1f} s" for s in side.get("worst_stalls", [])
        )
        print(f"{side['side']} stalls over 20 ms (when, from the client's start): {stalls or '-'}")
    return {
        "library": library,
        "bare": bare,
        "cpu_ratio": ratio,
        "targets": {"cpu_ratio": 1.5, "peak_rss_mb": 200, "worst_stall_ms": 100},
        "wake_workaround": wake,
    }


def main() -> int:
    args = _parser().parse_args()
    if args.child:
        return _child(args)
    if args.quick:
        args.jobs, args.run_time = 1000, 8.0
    started = time.monotonic()
    result = asyncio.run(_main(args))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    options = {
        k: v
        for k, v in vars(args).items()
        if k not in {"child", "base_url", "polls", "status_polls", "wake"}
    }
    write_json(args.json, {"benchmark": "scale", "options": options, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
