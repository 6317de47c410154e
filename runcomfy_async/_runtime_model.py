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

__all__ = ["RunTimeModel"]

# Log-spaced bins of normalised run time, from 50 ms to about 28 hours.
_BIN_LO = 0.05
_BIN_RATIO = 1.15
_BINS = 96
_LOG_RATIO = math.log(_BIN_RATIO)
_EDGES = [_BIN_LO * _BIN_RATIO**i for i in range(_BINS + 1)]
_EDGES[0] = 0.0
_REBUILD_EVERY = 64
"""Exposure updates between rebuilds of the smoothed hazard (events rebuild at once)."""

_FORMAT = 1
_DISAGREE_Z = 3.0
"""Standard deviations between this session's finishes and the prior's forecast
beyond which the prior is distrusted."""
_DISTRUSTED = 0.05
"""What is left of a prior's weight once this session disagrees with it."""
_STALE_WEIGHT = 0.2
"""What is left of a prior's weight once it is older than ``stale_after``."""


def _bin(seconds: float) -> int:
    if seconds <= _BIN_LO:
        return 0
    return min(_BINS - 1, int(math.log(seconds / _BIN_LO) / _LOG_RATIO))


def _zeros() -> list[float]:
    return [0.0] * _BINS


def _smoothed(
    events: list[float], exposure: list[float], min_events: int, reach: int
) -> tuple[list[float], int]:
    """Return the hazard per bin and the last bin with time at risk (-1: none)."""
    explored = [i for i in range(_BINS) if exposure[i] > 0]
    last = explored[-1] if explored else -1
    hazard = [0.0] * _BINS
    for centre in range(last + 1):
        ev, ex = events[centre], exposure[centre]
        for width in range(1, reach + 1):
            if ev >= min_events:
                break
            for index in (centre - width, centre + width):
                if 0 <= index <= last:
                    ev += events[index]
                    ex += exposure[index]
        # Half a pseudo-event: much time at risk with no finish says "rare
        # here", not "impossible here".
        hazard[centre] = (ev + 0.5) / ex if ex > 0 else 0.0
    tail = hazard[last] if last >= 0 else 0.0
    for index in range(last + 1, _BINS):
        hazard[index] = tail  # beyond what was seen: assume no change
    return hazard, last


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

    events: list[float] = attrs.field(factory=_zeros)
    exposure: list[float] = attrs.field(factory=_zeros)
    finished: int = 0
    min_events: int = 1
    reach: int = 4
    prior_events: list[float] = attrs.field(factory=_zeros, repr=False)
    prior_exposure: list[float] = attrs.field(factory=_zeros, repr=False)
    prior_weight: float = 0.0
    trusted: bool = True
    _prior_hazard: list[float] = attrs.field(factory=list, init=False, repr=False)
    _hazard: list[float] = attrs.field(factory=list, init=False, repr=False)
    _cumulative: list[float] = attrs.field(factory=list, init=False, repr=False)
    _frontier: float = attrs.field(default=0.0, init=False)
    _stale: int = attrs.field(default=_REBUILD_EVERY, init=False)

    # -- learning ------------------------------------------------------------------

    def add_exposure(self, start: float, end: float) -> None:
        """Count the span ``[start, end)`` of run time as time at risk."""
        if end <= start:
            return
        index = _bin(start)
        while start < end and index < _BINS:
            upper = _EDGES[index + 1] if index < _BINS - 1 else math.inf
            step = min(end, upper) - start
            self.exposure[index] += step
            start += step
            index += 1
        self._stale += 1

    def add_event(self, seconds: float) -> None:
        """Count a job that finished after *seconds* of run time."""
        self.events[_bin(seconds)] += 1.0
        self.finished += 1
        self._stale = _REBUILD_EVERY

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

    def hazard(self, seconds: float) -> float:
        """Return the estimated hazard at *seconds* (flat beyond the frontier)."""
        self._refresh()
        return self._hazard[_bin(seconds)]

    def cumulative(self, seconds: float) -> float:
        """Return the estimated cumulative hazard from 0 to *seconds*."""
        self._refresh()
        index = _bin(seconds)
        lower = _EDGES[index]
        return self._cumulative[index] + (seconds - lower) * self._hazard[index]

    def survival(self, seconds: float) -> float:
        """Return the estimated chance that a job runs longer than *seconds*."""
        return math.exp(-self.cumulative(seconds))

    def mean(self) -> float:
        """Return the estimated mean run time (the integral of the survival)."""
        self._refresh()
        total, last = 0.0, _bin(self._frontier) if self._frontier > 0 else 0
        for index in range(last + 1):
            lower, upper = _EDGES[index], _EDGES[index + 1]
            total += (upper - lower) * self.survival((lower + upper) / 2.0)
        tail = self._hazard[last] if self._hazard else 0.0
        # Beyond the frontier the hazard is flat: an exponential tail.
        return total + (self.survival(_EDGES[last + 1]) / tail if tail > 0 else 0.0)

    def horizon(self, seconds: float, budget: float) -> float:
        """Return the run time at which the cumulative hazard has grown by *budget*."""
        self._refresh()
        target = self.cumulative(seconds) + budget
        index = _bin(seconds)
        while index < _BINS - 1 and self._cumulative[index + 1] < target:
            index += 1
        rate = self._hazard[index]
        if rate <= 0:
            return math.inf
        return max(seconds, _EDGES[index] + (target - self._cumulative[index]) / rate)

    def _refresh(self) -> None:
        if self._stale < _REBUILD_EVERY:
            return
        self._stale = 0
        if self.prior_weight > 0 and self.trusted:
            self._check_prior()
        share = self.weight
        events = [a + share * b for a, b in zip(self.events, self.prior_events, strict=True)]
        exposure = [a + share * b for a, b in zip(self.exposure, self.prior_exposure, strict=True)]
        hazard, last = _smoothed(events, exposure, self.min_events, self.reach)
        self._frontier = _EDGES[last + 1] if last >= 0 else 0.0
        cumulative = [0.0] * (_BINS + 1)
        for index in range(_BINS):
            cumulative[index + 1] = (
                cumulative[index] + (_EDGES[index + 1] - _EDGES[index]) * hazard[index]
            )
        self._hazard, self._cumulative = hazard, cumulative

    def _check_prior(self) -> None:
        # The finishes the prior forecasts for the time at risk this session
        # watched, against the finishes seen: a Poisson count, so a gap of a
        # few standard deviations means the service changed pace.
        if not self._prior_hazard:
            self._prior_hazard, _ = _smoothed(
                self.prior_events, self.prior_exposure, self.min_events, self.reach
            )
        forecast = sum(h * x for h, x in zip(self._prior_hazard, self.exposure, strict=True))
        gap = (self.finished - forecast) / math.sqrt(forecast + 1.0)
        if abs(gap) > _DISAGREE_Z:
            self.trusted = False

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
            "bins": {"low": _BIN_LO, "ratio": _BIN_RATIO, "count": _BINS},
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
        bins = data.get("bins")
        if data.get("format") != _FORMAT or bins != {
            "low": _BIN_LO,
            "ratio": _BIN_RATIO,
            "count": _BINS,
        }:
            raise ValueError("not a run-time model this version can read")
        events = [float(e) for e in data["events"]]
        exposure = [float(x) for x in data["exposure"]]
        if len(events) != _BINS or len(exposure) != _BINS:
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
