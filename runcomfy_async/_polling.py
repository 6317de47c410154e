"""When to poll a job next: the main lever on a batch's request count.

A poll costs one request; polling late costs detection delay. For a job whose
run time has hazard rate ``h(t)`` (the chance per second of finishing now,
given it has not finished yet), the schedule that minimises
``requests + delay / delay_cost`` polls with spacing ``sqrt(2 * delay_cost /
h(t))``: rarely while finishing is unlikely, densely where it is likely.

:class:`AdaptivePolling` estimates ``h(t)`` per model from the jobs this
session has watched (a Nelson-Aalen estimator on log-spaced bins of run time:
finished jobs are events, still-running ones count as time at risk, so a
batch that started together learns from its own first finishers). Where it
has too little data it falls back to geometric spacing (a fixed share of the
time already run). While a job waits in the queue, it uses the reported
``queue_position`` and the queue's observed drain rate to poll at half the
expected wait. Every delay is jittered, so thousands of jobs never poll in
step, and clamped to a floor and a ceiling.

:class:`FixedInterval` is what other clients do, kept for comparison.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Protocol

import attrs

__all__ = ["AdaptivePolling", "FixedInterval", "PollPolicy", "PollState"]


@attrs.define(slots=True)
class PollState:
    """What the poller knows of one job, on the client's monotonic clock.

    The scheduler keeps it up to date; a policy only reads it (and its own
    learned state).

    Attributes:
        key: Jobs with the same key share learned run times (the model id).
        scale: This job's expected run time relative to the key's typical job.
        submitted_at: When the server accepted the job.
        phase: ``"unknown"`` (not polled yet), ``"queued"`` or ``"running"``.
        position: The last reported queue position, if any.
        position_at: When that position was seen.
        previous_position: The position reported by the poll before.
        previous_position_at: When that one was seen.
        started_at: When the job started running (estimated), if it has.
        last_poll: When it was last polled.
        polls: Polls made so far.
        credited: Run time (normalised by ``scale``) already counted as time
            at risk in the learned model.

    """

    key: str
    scale: float
    submitted_at: float
    phase: str = "unknown"
    position: int | None = None
    position_at: float | None = None
    previous_position: int | None = None
    previous_position_at: float | None = None
    started_at: float | None = None
    last_poll: float | None = None
    polls: int = 0
    credited: float = 0.0

    def see(self, phase: str, position: int | None, now: float) -> None:
        """Record a poll that found the job unfinished, in *phase*."""
        if phase == "running" and self.started_at is None:
            if self.phase == "queued" and self.last_poll is not None:
                # It started some time between the last two polls.
                self.started_at = (self.last_poll + now) / 2.0
            else:
                self.started_at = self.submitted_at
        if phase == "queued":
            self.previous_position, self.previous_position_at = self.position, self.position_at
            self.position, self.position_at = position, now
        self.phase = phase
        self.last_poll = now
        self.polls += 1

    def elapsed(self, now: float) -> float:
        """Seconds this job has been running (since submit if never seen queued)."""
        start = self.started_at if self.started_at is not None else self.submitted_at
        return max(0.0, now - start)


class PollPolicy(Protocol):
    """Decides when each job is polled next; swap in your own.

    The scheduler calls :meth:`observe` after every poll that saw the job
    unfinished (with its new phase set on *state*), :meth:`next_delay` to book
    the next poll, and :meth:`finished` once, when the job ended.
    """

    def next_delay(self, state: PollState, now: float) -> float:
        """Seconds from *now* until *state*'s job should be polled again."""
        ...

    def observe(self, state: PollState, now: float) -> None:
        """Learn from a poll that found the job unfinished."""
        ...

    def finished(self, state: PollState, now: float, run_seconds: float | None) -> None:
        """Learn from a finished job; *run_seconds* is the server's run time if known."""
        ...


@attrs.frozen(kw_only=True)
class FixedInterval:
    """Poll every ``interval`` seconds, as fal_client, replicate and others do.

    Attributes:
        interval: Seconds between polls.
        jitter: Share of the interval drawn at random (0 = none).

    """

    interval: float = attrs.field(validator=attrs.validators.gt(0))
    jitter: float = 0.0

    def next_delay(self, state: PollState, now: float) -> float:  # noqa: ARG002
        """Return the fixed interval (jittered if asked)."""
        if not self.jitter:
            return self.interval
        return self.interval * (1.0 + self.jitter * (2.0 * random.random() - 1.0))  # noqa: S311

    def observe(self, state: PollState, now: float) -> None:
        """Learn nothing."""

    def finished(self, state: PollState, now: float, run_seconds: float | None) -> None:
        """Learn nothing."""


# Log-spaced bins of normalised run time, from 50 ms to about 28 hours.
_BIN_LO = 0.05
_BIN_RATIO = 1.15
_BINS = 96
_LOG_RATIO = math.log(_BIN_RATIO)


def _bin(seconds: float) -> int:
    if seconds <= _BIN_LO:
        return 0
    return min(_BINS - 1, int(math.log(seconds / _BIN_LO) / _LOG_RATIO))


def _edge(index: int) -> float:
    return _BIN_LO * _BIN_RATIO**index


@attrs.define
class RunTimeModel:
    """Learned run-time hazard of one key: events and time at risk, per bin."""

    events: list[float] = attrs.field(factory=lambda: [0.0] * _BINS)
    exposure: list[float] = attrs.field(factory=lambda: [0.0] * _BINS)
    finished: int = 0

    def add_exposure(self, start: float, end: float) -> None:
        """Count the span ``[start, end)`` of run time as time at risk."""
        if end <= start:
            return
        index = _bin(start)
        while start < end and index < _BINS:
            upper = _edge(index + 1) if index < _BINS - 1 else math.inf
            step = min(end, upper) - start
            self.exposure[index] += step
            start += step
            index += 1

    def add_event(self, seconds: float) -> None:
        """Count a job that finished after *seconds* of run time."""
        self.events[_bin(seconds)] += 1.0
        self.finished += 1

    def hazard(self, seconds: float, min_events: int, reach: int) -> float | None:
        """Estimate the hazard at *seconds*, or None where data is too thin.

        Widens a window of bins around *seconds* until it holds *min_events*
        events (at most *reach* bins either side).
        """
        centre = _bin(seconds)
        events = self.events[centre]
        exposure = self.exposure[centre]
        for width in range(1, reach + 1):
            if events >= min_events:
                break
            for index in (centre - width, centre + width):
                if 0 <= index < _BINS:
                    events += self.events[index]
                    exposure += self.exposure[index]
        if events < min_events or exposure <= 0:
            return None
        return events / exposure

    def explored(self, seconds: float) -> bool:
        """Say whether some job has been watched running this long."""
        index = _bin(seconds)
        return any(self.exposure[index:])


@attrs.define(kw_only=True)
class AdaptivePolling:
    """Poll densely only where a job is likely to finish (the default policy).

    Attributes:
        delay_cost: Seconds of detection delay one request is worth: larger
            means fewer requests and later detection. The spacing near the
            likely finish is ``sqrt(2 * delay_cost / hazard)``.
        floor: The shortest wait between two polls of one job.
        ceiling: The longest wait between two polls of a running job.
        queued_ceiling: The longest wait between two polls of a queued job.
        first_poll: The wait before a new job's first poll when nothing is
            known yet (the model's run time is then learned as it goes).
        growth: Without enough data, wait this share of the time already run
            (geometric spacing, so a job of unknown length costs few polls).
        queue_share: While queued, wait this share of the expected wait.
        jitter: Share of each delay drawn at random, so jobs never poll in step.
        min_events: Finished jobs a hazard estimate needs around a run time.
        rand: The random source (seedable for tests).

    """

    delay_cost: float = 1.0
    floor: float = 1.0
    ceiling: float = 60.0
    queued_ceiling: float = 600.0
    first_poll: float = 2.0
    growth: float = 0.3
    queue_share: float = 0.5
    jitter: float = 0.1
    min_events: int = 3
    rand: Callable[[], float] = attrs.field(default=random.random, repr=False)
    _models: dict[str, RunTimeModel] = attrs.field(factory=dict, init=False, repr=False)
    _drain: float | None = attrs.field(default=None, init=False)

    def model(self, key: str) -> RunTimeModel:
        """Return the learned run-time model of *key*."""
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = RunTimeModel()
        return model

    @property
    def drain_rate(self) -> float | None:
        """Queue positions advanced per second, as observed (None until seen)."""
        return self._drain

    def next_delay(self, state: PollState, now: float) -> float:
        """Seconds until *state*'s job is polled next."""
        if state.phase == "queued":
            delay = self._queued_delay(state, now)
            top = self.queued_ceiling
        else:
            delay = self._running_delay(state, now)
            top = self.ceiling
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * self.rand() - 1.0)
        return min(top, max(self.floor, delay))

    def _queued_delay(self, state: PollState, now: float) -> float:
        if state.position is not None and self._drain:
            return self.queue_share * (state.position + 1) / self._drain
        waited = now - state.submitted_at
        return max(self.first_poll, self.growth * waited * 2)

    def _running_delay(self, state: PollState, now: float) -> float:
        model = self.model(state.key)
        elapsed = state.elapsed(now) / state.scale
        if model.finished == 0 and state.polls == 0:
            return self.first_poll
        hazard = model.hazard(elapsed, self.min_events, reach=4)
        geometric = self.growth * max(elapsed, self.first_poll)
        if hazard is None:
            return geometric * state.scale
        spacing = math.sqrt(2.0 * self.delay_cost / hazard) if hazard > 0 else math.inf
        if not model.explored(elapsed + spacing):
            # Never leap past what any job has been seen to survive: a run
            # time there is a guess, and a long leap would be a long delay.
            spacing = min(spacing, max(geometric, self.floor))
        return spacing * state.scale

    def observe(self, state: PollState, now: float) -> None:
        """Learn from a poll that found the job unfinished."""
        if state.phase == "running" and state.started_at is not None:
            elapsed = state.elapsed(now) / state.scale
            self.model(state.key).add_exposure(state.credited, elapsed)
            state.credited = max(state.credited, elapsed)
        elif (
            state.phase == "queued"
            and state.position is not None
            and state.previous_position is not None
            and state.position_at is not None
            and state.previous_position_at is not None
        ):
            self._learn_drain(
                state.previous_position,
                state.position,
                state.position_at - state.previous_position_at,
            )

    def _learn_drain(self, before: int, after: int, seconds: float) -> None:
        if seconds <= 0 or after > before:
            return
        sample = (before - after) / seconds
        # Weigh by elapsed time: a long observation says more than a short one.
        weight = min(1.0, seconds / 30.0)
        self._drain = (
            sample if self._drain is None else self._drain + weight * (sample - self._drain)
        )

    def finished(self, state: PollState, now: float, run_seconds: float | None) -> None:
        """Learn a finished job's run time."""
        model = self.model(state.key)
        end = self._run_time(state, now, run_seconds)
        model.add_exposure(state.credited, end)
        state.credited = max(state.credited, end)
        model.add_event(end)

    def _run_time(self, state: PollState, now: float, run_seconds: float | None) -> float:
        started = state.started_at if state.started_at is not None else state.submitted_at
        if run_seconds is not None:
            # Server time from acceptance to finish, less the queue time we saw.
            queued = max(0.0, started - state.submitted_at)
            seconds = max(0.0, run_seconds - queued)
        else:
            last = state.last_poll if state.last_poll is not None else started
            seconds = max(0.0, (last + now) / 2.0 - started)
        return seconds / state.scale
