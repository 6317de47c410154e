"""The learned run time of one model: a hazard estimate that can be persisted.

:class:`RunTimeModel` counts, on log-spaced bins of run time, the jobs that
finished in each bin (events) and the run time that jobs spent in it
unfinished (time at risk). Their ratio is the hazard: the chance per second
of finishing now, given the job has not finished yet (the Nelson-Aalen
estimator, which treats unfinished jobs as censored, so a batch that started
together learns from its own first finishers).

A model can be saved with :meth:`RunTimeModel.to_json` and loaded in a later
session with :meth:`RunTimeModel.from_json`. A loaded model is a *prior*:
kept apart from what this session sees, capped in weight, weighted down when
it is old, and weighted down further as soon as this session's finishes
disagree with it (the service got slower or faster), so a stale model costs
a few polls but never strands jobs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import attrs

from . import _bins as bins
from ._poll_plan import PollPlan

__all__ = ["PollPlan", "RunTimeModel"]

_REBUILD_EVERY = 64
"""Exposure updates between rebuilds of the smoothed hazard (events rebuild at once)."""

_SMOOTH_UNTIL = 100.0
"""Finishes after which a bin's hazard is its own: until then a sparse bin
borrows from its neighbours."""

_TAIL_EVENTS = 3.0
"""Finishes the hazard at and past the frontier is pooled over (at most ``2 * reach`` bins back)."""
_PARTIAL_BINS = 2
"""The last bins this session reached, left out of the check against a prior."""
_CHECK_EVERY = 16
"""Exposure updates between two full checks of a prior (finishes check at once)."""

_FORMAT = 1
_DISAGREE_P = 5e-5
"""How improbable this session's finishes where the prior watched jobs must be,
for it to be distrusted (strict: the check is made after every poll)."""
_OUTLIVED_P = 0.005
"""How improbable it must be that no more jobs finished past all the prior
watched (its tail is a guess from its last few finishes)."""
_DISTRUSTED = 0.05
"""What is left of a prior's weight once this session disagrees with it."""
_STALE_WEIGHT = 0.2
"""What is left of a prior's weight once it is older than ``stale_after``."""


def _smoothed(
    events: list[float], exposure: list[float], min_events: int, reach: int
) -> tuple[list[float], int]:
    """Return the hazard per bin and the last bin with time at risk (-1: none)."""
    explored = [i for i in range(bins.COUNT) if exposure[i] > 0]
    last = explored[-1] if explored else -1
    hazard = [0.0] * bins.COUNT
    empty = [False] * bins.COUNT
    settled = sum(events) >= _SMOOTH_UNTIL
    for centre in range(last + 1):
        ev, ex = events[centre], exposure[centre]
        if not settled:
            # Few finishes: a sparse bin borrows its neighbours'.
            # (Once there are enough, each bin's own rate is used: the
            # Nelson-Aalen estimate, unbiased, where borrowing would count a
            # neighbour's finishes twice and blur a steep edge.)
            for width in range(1, reach + 1):
                if ev >= min_events:
                    break
                for index in (centre - width, centre + width):
                    if 0 <= index <= last:
                        ev += events[index]
                        ex += exposure[index]
        empty[centre] = ev <= 0
        # Half a pseudo-event (until settled): much time at risk with no
        # finish says "rare here", not "impossible here".
        pseudo = 0.0 if settled else 0.5
        hazard[centre] = (ev + pseudo) / ex if ex > 0 else 0.0
    _spread_empty(hazard, empty, exposure, last)
    tail = hazard[last] if last >= 0 else 0.0
    if last >= 0 and settled:
        tail = hazard[last] = _pooled_tail(events, exposure, last, reach)
    for index in range(last + 1, bins.COUNT):
        hazard[index] = tail  # beyond what was seen: assume no change
    return hazard, last


def _spread_empty(hazard: list[float], empty: list[bool], exposure: list[float], last: int) -> None:
    """Give each stretch of bins with no finish near half a pseudo-event in all.

    Not half per bin: dozens of empty bins (say, the seconds before a
    model's shortest run) would otherwise add up to a few percent of
    finishes that never happen, and an optimal schedule pays polls for them.
    """
    start = 0
    while start <= last:
        if not empty[start]:
            start += 1
            continue
        stop = start
        while stop + 1 <= last and empty[stop + 1]:
            stop += 1
        total = sum(exposure[start : stop + 1])
        for index in range(start, stop + 1):
            hazard[index] = 0.5 / total if total > 0 else 0.0
        start = stop + 1


def _pooled_tail(events: list[float], exposure: list[float], last: int, reach: int) -> float:
    """Return the hazard at the frontier, pooled over the last bins back to a few finishes.

    The last bin is only partly watched, and a finish in a sliver of time
    at risk reads as a spike; flat beyond it, that spike would have every
    job polled at the floor.
    """
    ev = ex = 0.0
    for index in range(last, max(-1, last - 2 * reach - 1), -1):
        ev += events[index]
        ex += exposure[index]
        if ev >= _TAIL_EVENTS:
            break
    return (ev + 0.5) / ex if ex > 0 else 0.0


def _surprise(seen: int, mean: float, spread: float = 0.0) -> float:
    """Return the chance of a count as far out as *seen* from *mean* (one tail).

    The count is Poisson given the hazard; *spread* is the variance of the
    forecast itself (the prior's hazard is an estimate too), which makes the
    count negative binomial. Without it, two samples of the same service
    would disagree too often: a prior learned from 200 jobs is no more exact
    than this session's own 200.
    """
    if mean <= 0:
        return 1.0
    if mean > 50:  # a normal tail is good enough there, and cheap
        z = abs(seen - mean) / math.sqrt(mean + spread)
        return 0.5 * math.erfc(z / math.sqrt(2.0))
    if spread > 1e-9 * mean:
        shape = mean * mean / spread
        keep = shape / (shape + mean)
        term = total = math.exp(shape * math.log(keep))
        for k in range(1, seen + 1):
            term *= (k - 1 + shape) / k * (1.0 - keep)
            total += term
    else:
        term = total = math.exp(-mean)
        for k in range(1, seen + 1):
            term *= mean / k
            total += term
    at_most = min(1.0, total)  # P(X <= seen)
    if seen <= mean:
        return at_most
    return 1.0 - at_most + term  # P(X >= seen)


@attrs.define
class RunTimeModel:
    """Learned run-time hazard of one key: events and time at risk, per bin.

    Finished jobs add an event at their run time; every poll of a running
    job adds the run time since its last poll as time at risk. Run times are
    normalised by each job's ``scale``.

    Attributes:
        events: Finishes seen in this session, per bin.
        exposure: Seconds at risk seen in this session, per bin.
        finished: Finishes seen in this session.
        min_events: Finishes (this session's plus the prior's weighted ones)
            the hazard needs before it is used, and per smoothing window.
        reach: How many bins either side a sparse bin borrows from.
        prior_events: A persisted model's events (already weighted).
        prior_exposure: A persisted model's time at risk (already weighted).
        prior_weight: The weight the prior was loaded with (before any
            disagreement with this session).
        trusted: False once this session's finishes disagreed with the prior.

    """

    events: list[float] = attrs.field(factory=bins.zeros)
    exposure: list[float] = attrs.field(factory=bins.zeros)
    finished: int = 0
    min_events: int = 1
    reach: int = 4
    prior_events: list[float] = attrs.field(factory=bins.zeros, repr=False)
    prior_exposure: list[float] = attrs.field(factory=bins.zeros, repr=False)
    prior_weight: float = 0.0
    trusted: bool = True
    _prior_hazard: list[float] = attrs.field(factory=list, init=False, repr=False)
    _prior_last: int = attrs.field(default=-1, init=False, repr=False)
    _prior_tail: float = attrs.field(default=0.5, init=False, repr=False)
    _forecast_beyond: float = attrs.field(default=0.0, init=False, repr=False)
    _finished_beyond: int = attrs.field(default=0, init=False, repr=False)
    _unchecked: int = attrs.field(default=0, init=False, repr=False)
    _hazard: list[float] = attrs.field(factory=list, init=False, repr=False)
    _cumulative: list[float] = attrs.field(factory=list, init=False, repr=False)
    _frontier: float = attrs.field(default=0.0, init=False)
    _longest: float = attrs.field(default=0.0, init=False, repr=False)
    _stale: int = attrs.field(default=_REBUILD_EVERY, init=False)
    _revision: int = attrs.field(default=0, init=False, repr=False)

    # -- learning ------------------------------------------------------------------

    def add_exposure(self, start: float, end: float) -> None:
        """Count the span ``[start, end)`` of run time as time at risk."""
        if end <= start:
            return
        checking = self._checking()
        index = bins.index(start)
        while start < end and index < bins.COUNT:
            upper = bins.EDGES[index + 1] if index < bins.COUNT - 1 else math.inf
            step = min(end, upper) - start
            if checking and index > self._prior_last:
                self._forecast_beyond += self._prior_hazard[index] * step
            self.exposure[index] += step
            start += step
            index += 1
        self._stale += 1
        if checking:
            self._unchecked += 1
            self._check_prior(full=self._unchecked >= _CHECK_EVERY)

    def add_event(self, seconds: float) -> None:
        """Count a job that finished after *seconds* of run time."""
        index = bins.index(seconds)
        self.events[index] += 1.0
        self.finished += 1
        self._stale = _REBUILD_EVERY
        if self._checking():
            self._finished_beyond += index > self._prior_last
            self._check_prior(full=True)

    def _checking(self) -> bool:
        """Say whether a trusted prior is being checked against this session."""
        if self.prior_weight <= 0 or not self.trusted:
            return False
        if not self._prior_hazard:
            self._prior_hazard, last = _smoothed(
                self.prior_events, self.prior_exposure, self.min_events, self.reach
            )
            self._prior_last = last
            # The prior's tail rate rests on its last few finishes.
            tail = 0.5
            for index in range(last, max(-1, last - 2 * self.reach - 1), -1):
                tail += self.prior_events[index]
                if tail >= _TAIL_EVENTS + 0.5:
                    break
            self._prior_tail = tail
            self._forecast_beyond = sum(
                self._prior_hazard[i] * self.exposure[i] for i in range(last + 1, bins.COUNT)
            )
            self._finished_beyond = round(sum(self.events[last + 1 :]))
        return True

    # -- reading -------------------------------------------------------------------

    @property
    def weight(self) -> float:
        """The weight the prior has now (0 when there is none)."""
        return self.prior_weight * (1.0 if self.trusted else _DISTRUSTED)

    @property
    def evidence(self) -> float:
        """Finishes the hazard rests on: this session's plus the prior's weighted ones."""
        return self.finished + self.weight * sum(self.prior_events)

    @property
    def ready(self) -> bool:
        """True once enough jobs finished for the hazard to mean something."""
        return self.evidence >= self.min_events

    @property
    def frontier(self) -> float:
        """The longest run time any job has been watched for (prior included)."""
        self._refresh()
        return self._frontier

    @property
    def longest(self) -> float:
        """The longest run time any job was seen to finish at (prior included; a bin's end)."""
        self._refresh()
        return self._longest

    def hazard(self, seconds: float) -> float:
        """Return the estimated hazard at *seconds* (flat beyond the frontier)."""
        self._refresh()
        return self._hazard[bins.index(seconds)]

    def cumulative(self, seconds: float) -> float:
        """Return the estimated cumulative hazard from 0 to *seconds*."""
        self._refresh()
        index = bins.index(seconds)
        lower = bins.EDGES[index]
        return self._cumulative[index] + (seconds - lower) * self._hazard[index]

    def survival(self, seconds: float) -> float:
        """Return the estimated chance that a job runs longer than *seconds*."""
        return math.exp(-self.cumulative(seconds))

    def mean(self) -> float:
        """Return the estimated mean run time (the integral of the survival)."""
        self._refresh()
        total, last = 0.0, bins.index(self._frontier) if self._frontier > 0 else 0
        for index in range(last + 1):
            lower, upper = bins.EDGES[index], bins.EDGES[index + 1]
            total += (upper - lower) * self.survival((lower + upper) / 2.0)
        tail = self._hazard[last] if self._hazard else 0.0
        # Beyond the frontier the hazard is flat: an exponential tail.
        return total + (self.survival(bins.EDGES[last + 1]) / tail if tail > 0 else 0.0)

    def horizon(self, seconds: float, budget: float) -> float:
        """Return the run time at which the cumulative hazard has grown by *budget*."""
        self._refresh()
        target = self.cumulative(seconds) + budget
        index = bins.index(seconds)
        while index < bins.COUNT - 1 and self._cumulative[index + 1] < target:
            index += 1
        rate = self._hazard[index]
        if rate <= 0:
            return math.inf
        return max(seconds, bins.EDGES[index] + (target - self._cumulative[index]) / rate)

    @property
    def revision(self) -> int:
        """A number that changes whenever the hazard estimate is rebuilt."""
        self._refresh()
        return self._revision

    def plan(
        self,
        delay_cost: float,
        *,
        floor: float = 0.0,
        ceiling: float = math.inf,
        max_step_chance: float = 1.0,
    ) -> PollPlan:
        """Return the poll schedule that is optimal for this model (see :class:`PollPlan`).

        All arguments are in this model's (normalised) seconds.
        """
        self._refresh()
        return PollPlan.solve(
            self._hazard,
            self._frontier,
            delay_cost,
            floor=floor,
            ceiling=ceiling,
            max_step_chance=max_step_chance,
        )

    def _refresh(self) -> None:
        if self._stale < _REBUILD_EVERY:
            return
        self._stale = 0
        self._revision += 1
        share = self.weight
        events = [a + share * b for a, b in zip(self.events, self.prior_events, strict=True)]
        exposure = [a + share * b for a, b in zip(self.exposure, self.prior_exposure, strict=True)]
        hazard, last = _smoothed(events, exposure, self.min_events, self.reach)
        self._frontier = bins.EDGES[last + 1] if last >= 0 else 0.0
        ended = [i for i in range(bins.COUNT) if events[i] > 0]
        self._longest = bins.EDGES[ended[-1] + 1] if ended else 0.0
        cumulative = [0.0] * (bins.COUNT + 1)
        for index in range(bins.COUNT):
            cumulative[index + 1] = (
                cumulative[index] + (bins.EDGES[index + 1] - bins.EDGES[index]) * hazard[index]
            )
        self._hazard, self._cumulative = hazard, cumulative

    def _check_prior(self, *, full: bool) -> None:
        # The finishes the prior forecasts for the time at risk this session
        # watched (kept up to date as exposure comes in, so one long job is
        # enough to tell), against the finishes seen: a count that improbable
        # under the prior means the service changed pace. Two counts: where
        # the prior watched jobs, its hazard rests on its finishes there;
        # past that, on the few of its tail, so one long job that outlived
        # it far is telling, and one a little past it is not. (Exact tails,
        # not z-scores: small counts are the telling ones.)
        beyond = self._forecast_beyond
        outlived = (
            _surprise(self._finished_beyond, beyond, beyond * beyond / self._prior_tail)
            < _OUTLIVED_P
        )
        if outlived or (full and self._disagrees()):
            self.trusted = False
            self._stale = _REBUILD_EVERY  # rebuild the hazard without it

    def _disagrees(self) -> bool:
        """Say whether this session's finishes where the prior watched jobs refute it.

        The finishes seen against the prior's forecast, ``sum of e_b / x_b *
        c_b`` over bins b: a count whose forecast is itself noisy, with the
        variance of a two-sample test of Poisson rates (under the null both
        sessions share one hazard, estimated from both, and ``e_b`` is as
        noisy as this session's count). A variance from the prior's own
        estimate would be too small exactly where it is too low, and two
        samples of one service would disagree too often.
        """
        self._unchecked = 0
        seen = forecast = spread = 0.0
        # Not the last bins this session reached: a batch polled in step has
        # counted only part of them (the jobs polled so far this sweep), a
        # count as noisy as it is unbiased, and the check is made often.
        reached = max((i for i in range(bins.COUNT) if self.exposure[i] > 0), default=-1)
        for index in range(min(self._prior_last, reached - _PARTIAL_BINS) + 1):
            watched, before = self.exposure[index], self.prior_exposure[index]
            if watched <= 0 or before <= 0:
                continue
            count = self.events[index]
            seen += count
            forecast += self._prior_hazard[index] * watched
            pooled = (count + self.prior_events[index]) / (watched + before)
            spread += pooled * watched * watched / before
        return _surprise(round(seen), forecast, spread) < _DISAGREE_P

    # -- persistence -----------------------------------------------------------------

    def to_json(self, *, keep: float = 1000.0, saved_at: float | None = None) -> dict[str, Any]:
        """Return this model as a JSON-ready dict, for a later session's prior.

        What this session saw is merged with the prior (at its current
        weight), and the whole scaled down to at most *keep* finishes, so
        that old sessions fade as new ones are added. *saved_at* is a
        wall-clock time (``time.time()``, the default), for the age check of
        :meth:`from_json`.
        """
        share = self.weight
        events = [a + share * b for a, b in zip(self.events, self.prior_events, strict=True)]
        exposure = [a + share * b for a, b in zip(self.exposure, self.prior_exposure, strict=True)]
        total = sum(events)
        if total > keep > 0:
            events = [e * keep / total for e in events]
            exposure = [x * keep / total for x in exposure]
        return {
            "format": _FORMAT,
            "bins": {"low": bins.LOW, "ratio": bins.RATIO, "count": bins.COUNT},
            "events": [round(e, 4) for e in events],
            "exposure": [round(x, 3) for x in exposure],
            "saved_at": time.time() if saved_at is None else saved_at,
        }

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        *,
        now: float | None = None,
        stale_after: float = 7 * 86400.0,
        cap: float = 200.0,
        min_events: int = 1,
    ) -> RunTimeModel:
        """Return a model whose prior is the persisted *data* (from :meth:`to_json`).

        The prior counts as at most *cap* finishes, and as a fifth of that
        when it was saved more than *stale_after* seconds before *now*
        (wall-clock, ``time.time()`` by default). Raises ValueError when
        *data* is not a model this version can read.
        """
        layout = data.get("bins")
        if data.get("format") != _FORMAT or layout != {
            "low": bins.LOW,
            "ratio": bins.RATIO,
            "count": bins.COUNT,
        }:
            raise ValueError("not a run-time model this version can read")
        events = [float(e) for e in data["events"]]
        exposure = [float(x) for x in data["exposure"]]
        if len(events) != bins.COUNT or len(exposure) != bins.COUNT:
            raise ValueError("a run-time model needs one value per bin")
        if any(not math.isfinite(v) or v < 0 for v in (*events, *exposure)):
            raise ValueError("a run-time model holds finite, non-negative counts only")
        total = sum(events)
        weight = min(1.0, cap / total) if total > 0 else 0.0
        saved = float(data.get("saved_at", 0.0))
        age = (time.time() if now is None else now) - saved
        if age > stale_after:
            weight *= _STALE_WEIGHT
        return cls(
            min_events=min_events,
            prior_events=events,
            prior_exposure=exposure,
            prior_weight=weight,
        )
