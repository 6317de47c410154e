"""Shared harness of the benchmarks: the emulator process, scaling, probes, output.

Every benchmark talks to the emulator (``python -m runcomfy_async.testing``)
running in **another process**, and compares the library with baselines in the
same run, so the figures that matter are ratios, not absolute times.

Clocks: the emulator stamps jobs on ``time.monotonic()`` (CLOCK_MONOTONIC on
Linux), which is system-wide, so a client-side ``time.monotonic()`` taken when
a job's future resolves can be compared with the emulator's ``finished`` stamp
of that job directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import attrs

if TYPE_CHECKING:
    from typing_extensions import Self

    # The library is imported lazily, inside the functions that use it, so
    # that the bare-aiohttp side of scale.py can use this module without
    # loading it (and its memory) into its process.
    from runcomfy_async import (
        AdaptivePolling,
        ModelRequest,
        PollPolicy,
        PollState,
        RunComfy,
    )

MODEL = "acme/generic/text-to-video"
"""The emulator's generic model: any JSON payload, no image fetching."""

TOKEN = "bench-token"  # noqa: S105 - the emulator's fake token
API_KINDS = ("submit", "status", "result", "cancel")
"""Request kinds the emulator counts that are API exchanges (not admin)."""

ROOT = Path(__file__).resolve().parents[1]

# Fields of AdaptivePolling that are durations (seconds): scaled with the run.
# Names that the installed version lacks are skipped, so the list may name
# fields that only a later version has.
ADAPTIVE_TIME_FIELDS = (
    "delay_cost",
    "floor",
    "ceiling",
    "queued_ceiling",
    "first_poll",
    "drain_window",
)


def request(i: int) -> ModelRequest:
    """Return the i-th benchmark job (a tiny payload on the generic model)."""
    from runcomfy_async import ModelRequest  # noqa: PLC0415

    return ModelRequest(MODEL, {"prompt": f"benchmark job {i}"})


# The queue-drain average of AdaptivePolling weighs each observation by
# ``seconds / 30.0``: a duration that is not a field, so it cannot be scaled
# by passing settings. While that line is in the library, the benchmarks use
# a subclass whose only change is that window as a field (scaled like the
# rest); once the library has a field for it, the subclass is not used.
_DRAIN_LINE = "weight = min(1.0, seconds / 30.0)"


def _drain_window_hardcoded() -> bool:
    from runcomfy_async import AdaptivePolling  # noqa: PLC0415

    if "drain_window" in attrs.fields_dict(AdaptivePolling):
        return False
    try:
        return _DRAIN_LINE in inspect.getsource(AdaptivePolling._learn_drain)
    except (AttributeError, OSError, TypeError):
        return False


def _scaled_drain_class() -> type[AdaptivePolling]:
    from runcomfy_async import AdaptivePolling  # noqa: PLC0415

    @attrs.define(kw_only=True)
    class ScaledDrainPolling(AdaptivePolling):
        """AdaptivePolling with its hard-coded 30 s drain window as a field."""

        drain_window: float = 30.0

        def _learn_drain(self, before: int, after: int, seconds: float) -> None:
            # The library's _learn_drain, with 30.0 replaced by drain_window.
            if seconds <= 0 or after > before:
                return
            sample = (before - after) / seconds
            weight = min(1.0, seconds / self.drain_window)
            self._drain = (
                sample if self._drain is None else self._drain + weight * (sample - self._drain)
            )

    return ScaledDrainPolling


def scaled_adaptive(scale: float, **overrides: Any) -> AdaptivePolling:
    """Return an :class:`AdaptivePolling` with every time constant times *scale*.

    Dimensionless settings (growth, queue_share, jitter, min_events) are kept.
    *overrides* are nominal (unscaled) values for any field. See
    :data:`_DRAIN_LINE` for the one constant that needs a subclass.
    """
    from runcomfy_async import AdaptivePolling  # noqa: PLC0415

    cls = _scaled_drain_class() if _drain_window_hardcoded() else AdaptivePolling
    base = cls(**overrides)
    fields = attrs.fields_dict(cls)
    changes = {name: getattr(base, name) * scale for name in ADAPTIVE_TIME_FIELDS if name in fields}
    return attrs.evolve(base, **changes)


def adaptive_variant(policy: AdaptivePolling) -> str:
    """Say whether *policy* is the library's class or the scaled-drain subclass."""
    return (
        "library class"
        if type(policy).__module__.startswith("runcomfy_async")
        else ("subclass with the 30 s drain window scaled")
    )


def adaptive_settings(policy: AdaptivePolling) -> dict[str, float]:
    """Return the policy's public numeric settings, for the record."""
    out: dict[str, float] = {}
    for name, field in attrs.fields_dict(type(policy)).items():
        if name.startswith("_") or not field.init:
            continue
        value = getattr(policy, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


# -- the emulator ---------------------------------------------------------------


class Emulator:
    """The emulator in a subprocess, with its admin endpoints; ``async with``.

    Args:
        time_scale: The emulator's ``--time-scale``.
        slots: Running slots per account (None = unlimited).
        run_time: ``--run-time`` (``fixed:S``, ``uniform:A,B``, ``lognormal:MEAN,CV``).
        seed: The emulator's seed (the i-th submit gets the i-th run time).
        rate_limit: The hidden limit in requests per real second.
        rate_burst: Its bucket depth.
        faults: ``NAME=VALUE`` strings for ``--fault``.

    """

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        slots: int | None = None,
        run_time: str | None = None,
        seed: int = 0,
        rate_limit: float | None = None,
        rate_burst: float | None = None,
        faults: Sequence[str] = (),
    ) -> None:
        from runcomfy_async.testing import EmulatorProcess  # noqa: PLC0415

        extra: list[str] = []
        if run_time is not None:
            extra += ["--run-time", run_time]
        if rate_burst is not None:
            extra += ["--rate-burst", repr(rate_burst)]
        for fault in faults:
            extra += ["--fault", fault]
        self.process = EmulatorProcess(
            token=TOKEN,
            time_scale=time_scale,
            slots=slots,
            seed=seed,
            rate_limit=rate_limit,
            record=False,
            extra_args=extra,
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        """Where it listens."""
        return self.process.base_url

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    async def __aenter__(self) -> Self:
        await self.process.__aenter__()
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.process.__aexit__(None, None, None)

    def __enter__(self) -> Self:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    async def _get(self, path: str) -> Any:
        assert self._session is not None  # noqa: S101
        async with self._session.get(self.base_url + path) as response:
            response.raise_for_status()
            return await response.json()

    async def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        return await self._get("/_emulator/stats")

    async def jobs(self) -> list[dict[str, Any]]:
        """``GET /_emulator/jobs``: created/started/finished on the monotonic clock."""
        return await self._get("/_emulator/jobs")

    async def reset_stats(self) -> None:
        """``POST /_emulator/reset-stats``."""
        assert self._session is not None  # noqa: S101
        async with self._session.post(self.base_url + "/_emulator/reset-stats") as response:
            response.raise_for_status()


def api_requests(stats: dict[str, Any]) -> dict[str, int]:
    """The emulator's API request counts by kind (admin and files left out)."""
    counts = stats.get("requests", {})
    return {kind: int(counts.get(kind, 0)) for kind in API_KINDS}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# -- probes -------------------------------------------------------------------


class PollProbe:
    """Wraps a poll policy and counts what it sees, changing nothing.

    Counts polls by the phase the server reported (queued, running; running
    ones also before any job had finished, when nothing could be learned yet),
    the final polls that found jobs finished, and when each job was first polled
    (seconds after its submit was accepted). With :attr:`wake` set (see
    :func:`wake_workaround`), it also wakes the scheduler after each booking.
    """

    def __init__(self, inner: PollPolicy, *, count: bool = True) -> None:
        self.inner = inner
        self.count = count
        self.wake: Any = None
        self.reset()

    def reset(self) -> None:
        """Forget the counts (the wrapped policy keeps what it learned)."""
        self.queued_polls = 0
        self.running_polls = 0
        self.cold_running_polls = 0  # running polls made before any job had finished
        self.final_polls = 0
        self.first_poll_after: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def next_delay(self, state: PollState, now: float) -> float:
        """Delegate (and wake the dispatcher once the booking is made)."""
        if self.wake is not None:
            asyncio.get_running_loop().call_soon(self.wake)
        return self.inner.next_delay(state, now)

    def observe(self, state: PollState, now: float) -> Any:
        """Count one poll that found the job unfinished, then delegate."""
        if self.count:
            if state.phase == "queued":
                self.queued_polls += 1
            else:
                self.running_polls += 1
                if not self.final_polls:
                    self.cold_running_polls += 1
            if state.polls == 1:
                self.first_poll_after.append(now - state.submitted_at)
        return self.inner.observe(state, now)

    def finished(self, state: PollState, now: float, run_seconds: float | None) -> Any:
        """Count the poll that found the job finished, then delegate."""
        if self.count:
            self.final_polls += 1
            if state.polls == 0:
                self.first_poll_after.append(now - state.submitted_at)
        return self.inner.finished(state, now, run_seconds)


_WAKE_NEEDED: bool | None = None


async def wake_workaround_needed() -> bool:
    """Say whether the scheduler misses polls booked while its dispatcher sleeps.

    A single job with a 50 ms poll interval must be seen finished well within
    2 s; if not, the dispatcher was not woken when the job's first poll was
    booked (a scheduler bug: ``_book_poll`` pushes onto the heap without
    waking the dispatcher). Checked once per process, on its own emulator.
    """
    global _WAKE_NEEDED  # noqa: PLW0603 - a once-per-process probe
    from runcomfy_async import FixedInterval, Limits, RunComfy  # noqa: PLC0415

    if _WAKE_NEEDED is None:
        limits = Limits(initial_rate=1000.0)
        policy = FixedInterval(interval=0.05)
        library_logger = logging.getLogger("runcomfy_async")
        level = library_logger.level
        library_logger.setLevel(logging.ERROR)  # closing may warn of the stuck job
        try:
            async with (
                Emulator(run_time="fixed:0.05") as emulator,
                RunComfy(
                    TOKEN, base_url=emulator.base_url, limits=limits, polling=policy
                ) as client,
            ):
                job = client.submit(request(0))
                try:
                    with anyio.fail_after(2.0):
                        await job.wait(cancel_remote=False)
                    _WAKE_NEEDED = False
                except TimeoutError:
                    _WAKE_NEEDED = True
        finally:
            library_logger.setLevel(level)
        if _WAKE_NEEDED:
            print(
                "NOTE: the scheduler does not wake its dispatcher when it books a poll "
                "(a job is never polled); the harness wakes it after each booking "
                "(see benchmarks/README.md)",
                flush=True,
            )
    return _WAKE_NEEDED


def wake_workaround(client: RunComfy, probe: PollProbe) -> None:
    """Have *probe* wake *client*'s dispatcher after each poll booking."""
    probe.wake = client._engine._notify


class StallMonitor:
    """Sleeps ``period`` seconds in a loop and records how late it wakes.

    ``async with StallMonitor() as monitor:`` runs it as a task; afterwards
    :attr:`worst` is the longest lateness seen (an event-loop stall).
    """

    def __init__(self, period: float = 0.010) -> None:
        self.period = period
        self.worst = 0.0
        self.samples = 0
        self.late_over_50ms = 0
        self.started = time.monotonic()
        self.top: list[tuple[float, float]] = []  # (lateness s, when: s after start)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            late = time.perf_counter() - before - self.period
            self.samples += 1
            self.worst = max(self.worst, late)
            if late > 0.050:
                self.late_over_50ms += 1
            if late > 0.020:
                self.top.append((late, time.monotonic() - self.started - late))
                self.top = sorted(self.top, reverse=True)[:5]

    def worst_stalls(self) -> list[dict[str, float]]:
        """The five longest stalls over 20 ms: lateness and when each began (ms)."""
        return [{"ms": late * 1000, "at_s": at} for late, at in self.top]

    async def __aenter__(self) -> Self:
        self.started = time.monotonic()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- numbers ------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """The *share* quantile (0..1), linear between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean(values: Iterable[float]) -> float:
    """The mean, NaN when empty."""
    values = list(values)
    return sum(values) / len(values) if values else math.nan


# -- output -------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where and when the figures were measured."""
    import runcomfy_async  # noqa: PLC0415

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--", "runcomfy_async"):
        commit += " (runcomfy_async/ has uncommitted changes)"
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "runcomfy_async": runcomfy_async.__version__,
        "commit": commit,
        "argv": sys.argv[1:],
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""


def fmt(value: Any, digits: int = 2) -> str:
    """Format one table cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and abs(value) < 10**-digits:
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    """Print rows as an aligned plain-text table."""
    cells = [[fmt(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    if title:
        print(f"\n{title}")

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in pairs).rstrip()

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row))
    sys.stdout.flush()


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write *data* (with the machine record) to *path*, if one was given."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = _clean({"machine": machine(), **data})
    target.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {target}")


def _clean(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def verdict(value: float, target: float, *, at_most: bool = True) -> str:
    """``ok`` or ``MISS`` against a target (a report, never an assertion)."""
    if math.isnan(value):
        return "n/a"
    good = value <= target if at_most else value >= target
    return "ok" if good else "MISS"
