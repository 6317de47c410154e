"""When to poll a job next: the main lever on a batch's request count.

A poll costs one request; polling late costs detection delay. For a job whose
run time has hazard rate ``h(t)`` (the chance per second of finishing now,
given it has not finished yet), the schedule that minimises
``requests + delay / delay_cost`` polls with spacing ``sqrt(2 * delay_cost /
h(t))``: rarely while finishing is unlikely, densely where it is likely.

:class:`AdaptivePolling` estimates ``h(t)`` per model from the jobs this
session has watched (a Nelson-Aalen estimator on log-spaced bins of run time:
finished jobs are events, still-running ones count as time at risk, so a
batch that started together learns from its own first finishers). No step
may skip more than ``max_step_chance`` of the chance of finishing; before
anything is known a few probe jobs per model search for the run time for the
whole batch (geometric spacing that tightens as the batch runs on unseen),
while the rest wait for their first finish; past the longest run time yet
watched it creeps forward. While a
job waits in the queue, it uses the reported ``queue_position`` and the
queue's drain rate (positions moved over time watched) to poll at a share of
the expected wait, never past where a queue twice as fast would have started
and finished the job. Every delay is jittered, so thousands of jobs never
poll in step, and clamped to a floor and a ceiling.

:class:`FixedInterval` is what other clients do, kept for comparison.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from ._runtime_model import PollPlan, RunTimeModel

__all__ = [
    "AdaptivePolling",
    "FixedInterval",
    "Phase",
    "PollPolicy",
    "PollState",
    "RunTimeModel",
]


class Phase(str, enum.Enum):
    """Where a job was last seen: not yet polled, waiting in the queue, or running.

    The values are the words the engine used before this enum; as a ``str``
    mixin, a phase still compares equal to its word (kept for one release).
    """

    UNKNOWN = "unknown"
    QUEUED = "queued"
    RUNNING = "running"


# Set on every poll of every job: no per-attribute hooks (the phase is
# converted at construction and by see()).
@attrs.define(slots=True, on_setattr=attrs.setters.NO_OP)
class PollState:
    """What the poller knows of one job, on the client's monotonic clock.

    The scheduler keeps it up to date; a policy only reads it (and its own
    learned state).

    Attributes:
        key: Jobs with the same key share learned run times (the model id).
        scale: This job's expected run time relative to the key's typical job.
        submitted_at: When the server accepted the job (for a re-attached
            job: when it was attached).
        phase: Where the job was last seen (:class:`Phase`).
        position: The last reported queue position, if any.
        position_at: When that position was seen.
        previous_position: The position reported by the poll before.
        previous_position_at: When that one was seen.
        started_at: When the job started running (estimated), if it has.
        last_poll: When it was last polled.
        polls: Polls made so far.
        credited: Run time (normalised by ``scale``) already counted as time
            at risk in the learned model.
        just_started: True on the poll that first saw the job running.
        attached: True for a job re-attached by request id: its age is
            unknown, so its run time so far is not either (until it is seen
            to start: see :attr:`age_known`).
        start_seen: True once the job was seen queued and then running, so
            its start is known to within one poll.
        probe: Set by the policy: this job is polled early to learn a new
            model's run time for its batch.
        probe_rank: Set by the policy: a probe's place among its model's
            probes (0 for the first), which sets when it starts.

    """

    key: str
    scale: float
    submitted_at: float
    phase: Phase = attrs.field(default=Phase.UNKNOWN, converter=Phase)
    position: int | None = None
    position_at: float | None = None
    previous_position: int | None = None
    previous_position_at: float | None = None
    started_at: float | None = None
    last_poll: float | None = None
    polls: int = 0
    credited: float = 0.0
    just_started: bool = False
    attached: bool = False
    start_seen: bool = False
    probe: bool | None = None
    probe_rank: int = 0

    def see(self, phase: Phase | str, position: int | None, now: float) -> None:
        """Record a poll that found the job unfinished, in *phase*."""
        phase = Phase(phase)
        self.just_started = phase is Phase.RUNNING and self.started_at is None
        if self.just_started:
            if self.phase is Phase.QUEUED and self.last_poll is not None:
                # It started some time between the last two polls.
                self.started_at = (self.last_poll + now) / 2.0
                self.start_seen = True
            else:
                # Unknown start (never seen queued, or re-attached): the
                # submit is the best guess; an attached job's age is not
                # trusted for learning (see AdaptivePolling).
                self.started_at = self.submitted_at
        if phase is Phase.QUEUED:
            self.previous_position, self.previous_position_at = self.position, self.position_at
            self.position, self.position_at = position, now
        self.phase = phase
        self.last_poll = now
        self.polls += 1

    @property
    def age_known(self) -> bool:
        """Whether the job's run time so far is known (not for a job re-attached running)."""
        return not self.attached or self.start_seen

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

    def finished(self, state: PollState, now: float, run_seconds: float | None) -> bool:
        """Learn from a finished job; *run_seconds* is the server's run time if known.

        Return True if what was learned may pull other jobs' polls earlier:
        the scheduler then asks again for every live job with the same key.
        """
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

    def finished(self, state: PollState, now: float, run_seconds: float | None) -> bool:  # noqa: ARG002
        """Learn nothing."""
        return False


_REPLAN_UNTIL = 64
"""Re-plans at doublings stop once a model has seen this many finishes: it has settled."""
_PLAN_EVENTS = 0.1
"""A plan is solved again once the model has seen this share more finishes..."""
_PLAN_FRONTIER = 1.05
"""...or watched jobs this much longer than when it was solved."""
_PLAN_CACHE = 64
"""Plans kept (one per key and scale) before the cache is emptied."""


@attrs.define(kw_only=True)
class AdaptivePolling:
    """Poll densely only where a job is likely to finish (the default policy).

    Attributes:
        delay_cost: Seconds of detection delay one request is worth: larger
            means fewer requests and later detection. Near the likely finish
            the spacing is ``sqrt(2 * delay_cost / hazard)``.
        max_step_chance: The highest chance that a job finishes between two
            polls (given it was running at the first), so that a leap over a
            region of rising hazard never strands many jobs.
        floor: The shortest wait between two polls of one job.
        ceiling: The longest wait between two polls of a running job.
        queued_ceiling: The longest wait between two polls of a queued job.
        first_poll: While a model's run time is unknown, the shortest run
            time worth asking about: a probe's wait is grown from it, and a
            later probe starts later in units of it (see ``probe_ramp``).
        growth: While a model's run time is unknown (nothing finished yet),
            a probe job waits at most this share of the time already run
            (geometric spacing, so a job of unknown length costs few
            polls), and at most ``sqrt(first_poll * t)`` at run time t: the
            longer a batch has run unseen, the more of it finishes unseen
            between two polls, so the search tightens as it goes on.
        wait_growth: The same share for the rest of a new model's batch
            (capped by ``ceiling``): they wait for the probes' first finish,
            which re-plans them, rather than each pay the search.
        probes: A new model's first jobs that probe, from their start...
        probe_every: ...and then one job in this many, joining later.
        probe_ramp: The later probes join at this many per ``first_poll``
            seconds of run time: probe number n (from 0) first polls after
            ``first_poll * (n - probes) / probe_ramp`` seconds (and no
            sooner than ``growth * first_poll``, nor later than
            ``ceiling``). A few probes search the first seconds, where a
            late detection costs little; more join as the stakes grow.
        frontier_growth: Once some jobs have finished, a running job past the
            longest run time yet watched waits at most this share of the time
            it has run: the learned hazard says nothing there.
        queued_growth: While queued and the queue's pace is unknown, wait this
            share of the time already waited.
        queue_share: While queued, wait this share of the expected wait.
        jitter: Share of each delay drawn at random, so jobs never poll in step.
        min_events: Finished jobs a model needs before its hazard is used.
        drain_samples: How many recent sightings of queue positions moving
            (or not) the drain rate is estimated from.
        stale_after: A persisted model older than this (seconds) is loaded
            with a fifth of its weight.
        prior_cap: A persisted model counts as at most this many finishes,
            so this session's own evidence soon outweighs it.
        plan_after: Finishes (a prior's weighted ones included) a model
            needs before the schedule is solved exactly for it (see
            ``PollPlan``); before, the local rule is used. As many as
            ``prior_cap``: a fresh prior at full weight is planned on at
            once, while a batch learning a new model keeps the local rule
            for its first 200 finishes (an exact plan for a model that has
            seen only a first mode polls too much in the gap after it).
        rand: The random source (seedable for tests).

    """

    delay_cost: float = 0.1
    max_step_chance: float = 0.25
    floor: float = 0.5
    ceiling: float = 60.0
    queued_ceiling: float = 600.0
    first_poll: float = 2.0
    growth: float = 0.5
    wait_growth: float = 30.0
    probes: int = 8
    probe_every: int = 4
    probe_ramp: float = 2.0
    frontier_growth: float = 0.3
    queued_growth: float = 2.0
    queue_share: float = 0.8
    jitter: float = 0.1
    min_events: int = 1
    drain_samples: int = 64
    stale_after: float = 7 * 86400.0
    prior_cap: float = 200.0
    plan_after: float = 200.0
    rand: Callable[[], float] = attrs.field(default=random.random, repr=False)
    _models: dict[str, RunTimeModel] = attrs.field(factory=dict, init=False, repr=False)
    _cold_jobs: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)
    _probe_count: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)
    _plans: dict[tuple[str, float], tuple[int, int, float, PollPlan]] = attrs.field(
        factory=dict, init=False, repr=False
    )
    _drain: float | None = attrs.field(default=None, init=False)
    _moving_since: float | None = attrs.field(default=None, init=False, repr=False)
    _sightings: deque[tuple[float, float]] = attrs.field(factory=deque, init=False, repr=False)
    _moved: float = attrs.field(default=0.0, init=False, repr=False)
    _watched: float = attrs.field(default=0.0, init=False, repr=False)

    def _model(self, key: str) -> RunTimeModel:
        """Return the learned run-time model of *key*."""
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = RunTimeModel(min_events=self.min_events)
        return model

    def export_models(self) -> dict[str, dict[str, Any]]:
        """Return every learned model as JSON-ready data, keyed by model id.

        Give it to :meth:`load_models` in a later session (a journal or a
        cache file can store it; the client keeps them in its journal or in the
        user's cache folder).
        """
        return {key: model.to_json() for key, model in self._models.items() if model.evidence > 0}

    def load_models(
        self, data: Mapping[str, Mapping[str, Any]], *, now: float | None = None
    ) -> int:
        """Use models persisted by :meth:`export_models` as priors; return how many loaded.

        A model already learned in this session is kept (it knows better).
        One that cannot be read is skipped. *now* is the wall-clock time
        (``time.time()`` by default) for the ``stale_after`` check.
        """
        loaded = 0
        for key, value in data.items():
            if key in self._models and self._models[key].finished:
                continue
            try:
                self._models[key] = RunTimeModel.from_json(
                    value,
                    now=now,
                    stale_after=self.stale_after,
                    cap=self.prior_cap,
                    min_events=self.min_events,
                )
            except (KeyError, TypeError, ValueError):
                continue
            loaded += 1
        return loaded

    def _attached_delay(self, model: RunTimeModel, elapsed: float) -> float:
        # A re-attached job has run for an unknown time, so the learned
        # hazard cannot be read at its age: poll it as a fixed poller tuned
        # to the model would (for a uniformly random age, the spacing
        # sqrt(2 * delay_cost * mean run time) is optimal); knowing nothing,
        # grow as a probe does.
        if not model.ready:
            return self.growth * max(elapsed, self.first_poll)
        return math.sqrt(2.0 * self.delay_cost * model.mean())

    def _cold_delay(self, state: PollState, elapsed: float) -> float:
        # Nothing of this model has finished yet: the probes search for its
        # run time for the whole batch, the rest wait for their first finish.
        if state.probe is None:
            state.probe = self._is_probe(state.key)
            if state.probe:
                rank = self._probe_count.get(state.key, 0)
                self._probe_count[state.key] = rank + 1
                state.probe_rank = rank
        run = max(elapsed, self.first_poll)
        if not state.probe:
            return self.wait_growth * run
        step = min(self.growth * run, math.sqrt(self.first_poll * run))
        if state.polls == 0:
            later = max(0, state.probe_rank - self.probes)
            start = self.first_poll * later / self.probe_ramp
            step = max(step, start - elapsed)
        return step

    def _is_probe(self, key: str) -> bool:
        # The first jobs of a key, then one in probe_every: enough to see the
        # batch's first finishes early, few enough that the rest of the
        # batch does not pay the search for the run time.
        seen = self._cold_jobs.get(key, 0)
        self._cold_jobs[key] = seen + 1
        return seen < self.probes or seen % self.probe_every == 0

    @property
    def drain_rate(self) -> float | None:
        """Queue positions advanced per second, as observed (None until seen)."""
        return self._drain

    def next_delay(self, state: PollState, now: float) -> float:
        """Seconds until *state*'s job is polled next."""
        if state.phase is Phase.QUEUED:
            delay = self._queued_delay(state, now)
            # The long ceiling is for a job seen waiting more than once: one
            # sighting (say, a re-attached job's first answer) says nothing
            # of how fast its queue moves now.
            top = self.queued_ceiling
            if state.previous_position is None:
                waited = max(now - state.submitted_at, self.first_poll)
                top = min(self.ceiling, self.queued_growth * waited)
        else:
            delay = self._running_delay(state, state.elapsed(now))
            top = self.ceiling
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * self.rand() - 1.0)
        return min(top, max(self.floor, delay))

    def _queued_delay(self, state: PollState, now: float) -> float:
        if state.position is None or not self._drain:
            waited = max(now - state.submitted_at, self.first_poll)
            # The queue's pace is unknown: grow geometrically, but no further
            # than a running job's ceiling (the long queued ceiling is for a
            # queue whose pace was seen), so a queue that drains fast never
            # leaves a job unasked for minutes.
            return min(self.queued_growth * waited, self.ceiling)
        wait = (state.position + 1) / self._drain
        # How soon after its start the job could finish: a learned model
        # says; before anything finished, a probe's first step (not the wait
        # of the rest of a new model's batch, which trusts the probes).
        if self._model(state.key).ready:
            first_step = self._running_delay(state, 0.0)
        else:
            first_step = self.growth * self.first_poll
        if wait <= first_step:
            # It starts soon and cannot finish for a while after: skip the
            # start and poll where finishing becomes likely.
            return wait + first_step
        # The drain rate is an estimate: never leap past the point where the
        # job could already have started and finished, were the queue moving
        # twice as fast as it seemed to.
        step = min(self.queue_share * wait, 0.5 * wait + first_step)
        # Nor further ahead than the queue has been watched moving: a queue
        # that stood still while the first jobs ran reads as slow at first.
        watched = now - self._moving_since if self._moving_since is not None else 0.0
        return min(step, max(self.ceiling, watched))

    def _running_delay(self, state: PollState, elapsed: float) -> float:
        model = self._model(state.key)
        if not state.age_known and state.phase is Phase.RUNNING:
            return self._attached_delay(model, elapsed)
        if not model.ready:
            return self._cold_delay(state, elapsed)
        scale = state.scale
        run = elapsed / scale
        if model.evidence >= self.plan_after:
            # Enough finishes for the hazard to be trusted: the exact optimum.
            spacing = self._plan(state.key, model, scale).next_poll(run)
        else:
            spacing = self._local_spacing(model, run, scale)
        # Beyond anything seen, the hazard is a guess (and a rising one is
        # underestimated by extrapolating it flat): creep forward.
        if run + spacing > model.frontier:
            spacing = min(
                spacing,
                max(model.frontier - run, 0.0)
                + self.frontier_growth * max(run, self.first_poll / scale),
            )
        if model.prior_weight > 0 and run > model.longest:
            # A warm model, and a job past every finish it knows: its hazard
            # here is extrapolated flat from the last few finishes, a guess
            # worth less the further the job outlives them. Back off with the
            # overshoot: gently while the prior is trusted, as a cold probe
            # would once this session has proved it wrong (the service got
            # slower). A model learnt in this session alone keeps its own tail
            # rule above: it knows the tail it has watched, and in a batch
            # started together every running job is past its longest finish.
            # (The longest finish, not the frontier: the job itself pushes the
            # frontier forward as it is polled.)
            share = self.frontier_growth if model.trusted else self.growth
            spacing = max(spacing, share * (run - model.longest))
        return spacing * scale

    def _local_spacing(self, model: RunTimeModel, run: float, scale: float) -> float:
        # While a model is young its hazard is noisy, and an exact optimum
        # for it would chase the noise: the local rule sqrt(2 c / h), with
        # the hazard taken mid-step, is more forgiving.
        spacing = self.ceiling / scale
        for _ in range(3):
            rate = model.hazard(run + spacing / 2.0)
            spacing = math.sqrt(2.0 * self.delay_cost / scale / rate) if rate > 0 else math.inf
        # Never leap over more than max_step_chance of finishing.
        budget = -math.log(1.0 - self.max_step_chance)
        return min(spacing, model.horizon(run, budget) - run)

    def _plan(self, key: str, model: RunTimeModel, scale: float) -> PollPlan:
        # Solving a plan takes milliseconds: solve it again only when the
        # model has learned enough to change it.
        revision = model.revision
        cached = self._plans.get((key, scale))
        if cached is not None:
            seen, finished, frontier, plan = cached
            if seen == revision or (
                model.finished < finished + max(1.0, _PLAN_EVENTS * finished)
                and model.frontier < _PLAN_FRONTIER * frontier
            ):
                return plan
        if len(self._plans) >= _PLAN_CACHE:
            self._plans.clear()
        plan = model.plan(
            self.delay_cost / scale,
            floor=self.floor / scale,
            ceiling=self.ceiling / scale,
            max_step_chance=self.max_step_chance,
        )
        self._plans[key, scale] = (revision, model.finished, model.frontier, plan)
        return plan

    def observe(self, state: PollState, now: float) -> None:
        """Learn from a poll that found the job unfinished."""
        if state.phase is Phase.RUNNING and not state.age_known:
            return  # its age is unknown: it would teach wrong run times
        if state.phase is Phase.RUNNING:
            if state.just_started and self._drain and state.position_at is not None:
                self._refine_start(state, now)
            elapsed = state.elapsed(now) / state.scale
            self._model(state.key).add_exposure(state.credited, elapsed)
            state.credited = max(state.credited, elapsed)
        elif (
            state.phase is Phase.QUEUED
            and state.position is not None
            and state.previous_position is not None
            and state.position_at is not None
            and state.previous_position_at is not None
        ):
            self._learn_drain(
                state.previous_position,
                state.position,
                state.position_at - state.previous_position_at,
                now=now,
            )

    def _refine_start(self, state: PollState, now: float) -> None:
        # The queue's drain rate dates the start better than the midpoint.
        assert self._drain is not None  # noqa: S101
        if state.position is None or state.position_at is None:
            return
        guess = state.position_at + (state.position + 1) / self._drain
        state.started_at = min(max(guess, state.position_at), now)

    def _learn_drain(
        self, before: int, after: int, seconds: float, *, now: float | None = None
    ) -> None:
        if seconds <= 0 or after > before:
            return
        if after < before and self._moving_since is None and now is not None:
            self._moving_since = now
        # Positions moved over time watched, summed over recent sightings:
        # the unbiased estimate for a steadily draining queue. (Averaging
        # per-sighting rates is not: many short sightings with no move would
        # drag it towards zero, and a job would then wait out a long guess.)
        self._sightings.append((before - after, seconds))
        self._moved += before - after
        self._watched += seconds
        while len(self._sightings) > self.drain_samples:
            moved, watched = self._sightings.popleft()
            self._moved -= moved
            self._watched -= watched
        if self._moved > 0 and self._watched > 0:
            self._drain = self._moved / self._watched

    def finished(self, state: PollState, now: float, run_seconds: float | None) -> bool:
        """Learn a finished job's run time; say if other jobs should re-plan."""
        model = self._model(state.key)
        if not state.age_known:
            return False  # its age unknown: learn nothing
        was_ready = model.ready
        end = self._run_time(state, now, run_seconds)
        model.add_exposure(state.credited, end)
        state.credited = max(state.credited, end)
        model.add_event(end)
        # The first lessons change the plan most: re-plan when the model
        # becomes usable, then at each doubling of what it has seen.
        count = model.finished
        return (
            model.ready and count <= _REPLAN_UNTIL and (not was_ready or count & (count - 1) == 0)
        )

    def _run_time(self, state: PollState, now: float, run_seconds: float | None) -> float:
        started = state.started_at if state.started_at is not None else state.submitted_at
        if run_seconds is not None and not state.attached:
            # Server time from acceptance to finish, less the queue time we saw.
            # (Not for a re-attached job: its queue time before the attach is
            # unknown.)
            queued = max(0.0, started - state.submitted_at)
            seconds = max(0.0, run_seconds - queued)
        else:
            last = state.last_poll if state.last_poll is not None else started
            seconds = max(0.0, (last + now) / 2.0 - started)
        return seconds / state.scale
