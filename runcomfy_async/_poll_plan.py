"""The poll schedule that is optimal for a known run-time hazard.

:class:`PollPlan` is solved by dynamic programming over a learned hazard
(per bin of :mod:`._bins`, flat past the model's frontier); the policy asks
it for the next poll of a running job once the model is settled.
"""

from __future__ import annotations

import bisect
import math

import attrs

from . import _bins as bins

__all__ = ["PollPlan"]


_RESOLUTION = 0.2
"""Grid steps of a plan, as a share of the locally optimal spacing: the error
this costs is second order (well under 1 %)."""
_TAIL_SURVIVAL = 1e-5
"""A plan's grid ends where fewer jobs than this share are still running."""


def _segment(s0: float, g0: float, a: float, rate: float, dt: float) -> tuple[float, float]:
    """Return survival and ``integral of x f(x)`` at ``a + dt``, from their values at *a*.

    The hazard is *rate* throughout the segment.
    """
    if rate <= 0 or dt <= 0:
        return s0, g0
    kept = math.exp(-rate * dt)
    # integral of x * rate * e^(-rate (x - a)) dx from a to a + dt
    moment = a - (a + dt) * kept - math.expm1(-rate * dt) / rate
    return s0 * kept, g0 + s0 * moment


def _tail(
    rate: float, cost: float, floor: float, ceiling: float, keep: float
) -> tuple[float, float]:
    """Return (spacing, cost per job) of the best fixed spacing under a constant hazard.

    Beyond a model's frontier its hazard is flat, so the job's future looks
    the same from every poll: the optimum is one fixed spacing s, costing
    ``(1 + delay(s) / cost) / (1 - e^(-rate s))`` polls per surviving job.
    """
    if rate <= 0:
        return ceiling if math.isfinite(ceiling) else 1e9, 1e9
    top = ceiling
    if keep > 0:
        top = min(top, -math.log(keep) / rate)
    low = max(floor, 1e-6)
    guess = min(max(math.sqrt(2.0 * cost / rate), low), top)
    best = (math.inf, guess)
    for step in range(-24, 25):
        spacing = min(max(guess * 2.0 ** (step / 8.0), low), top)
        done = -math.expm1(-rate * spacing)
        delay = spacing - done / rate
        value = (1.0 + delay / cost) / done
        best = min(best, (value, spacing))
    return best[1], best[0]


@attrs.frozen
class PollPlan:
    """The poll schedule that minimises ``polls + delay / delay_cost`` for a known hazard.

    Solved exactly, by dynamic programming on a grid fine enough that the
    rounding costs under 1 %: ``W(t)``, the expected cost to come of a job
    polled at run time *t* and found running (weighted by the chance that
    it runs that long), is the least over the next poll *u* of ``S(t)`` (the
    poll at *u*) plus the expected delay of a finish between *t* and *u*
    (over ``delay_cost``) plus ``W(u)``. The continuous spacing rule
    ``sqrt(2 c / h)`` is this optimum's limit for many polls per job; with
    few (a narrow run time), rounding to whole polls matters, and the plan
    gets it right. Beyond the grid, where the hazard is flat, the best
    spacing is a fixed one.

    Attributes:
        times: The grid of run times (normalised seconds), from 0.
        survival: The chance a job runs past each grid time.
        moment: The integral of ``x f(x)`` up to each grid time.
        rates: The hazard on each segment ``[times[k], times[k + 1])``.
        value: ``W`` at each grid time.
        cost: Seconds of delay one poll is worth (normalised).
        floor: The shortest spacing allowed.
        ceiling: The longest spacing allowed.
        keep: The least share of running jobs one step may keep running
            (``1 - max_step_chance``).
        tail_rate: The hazard beyond the grid.
        tail_spacing: The best spacing beyond the grid.
        tail_value: The cost to come per job still running at the grid's
            end, polled there.

    """

    times: list[float]
    survival: list[float]
    moment: list[float]
    rates: list[float]
    value: list[float]
    cost: float
    floor: float
    ceiling: float
    keep: float
    tail_rate: float
    tail_spacing: float
    tail_value: float

    @classmethod
    def solve(
        cls,
        hazard: list[float],
        frontier: float,
        cost: float,
        *,
        floor: float = 0.0,
        ceiling: float = math.inf,
        max_step_chance: float = 1.0,
    ) -> PollPlan:
        """Return the optimal plan for the per-bin *hazard* (flat past *frontier*)."""
        keep = 1.0 - max_step_chance
        times, survival, moment, rates = [0.0], [1.0], [0.0], []
        last = max(bins.index(frontier * 0.999), 0) if frontier > 0 else 0
        tail_rate = hazard[last]
        for index in range(bins.COUNT):
            lower, upper = bins.EDGES[index], bins.EDGES[index + 1]
            rate = hazard[index]
            if index > last or survival[-1] < _TAIL_SURVIVAL:
                tail_rate = rate
                break
            width = upper - lower
            step = _RESOLUTION * math.sqrt(2.0 * cost / rate) if rate > 0 else width
            step = min(step, ceiling / 2.0)
            if keep > 0 and rate > 0:
                # Fine enough that the step cap can be met within a bin.
                step = min(step, -math.log(keep) / rate / 4.0)
            parts = max(1, math.ceil(width / step))
            for part in range(parts):
                a = times[-1]
                b = lower + width * (part + 1) / parts
                s, g = _segment(survival[-1], moment[-1], a, rate, b - a)
                times.append(b)
                survival.append(s)
                moment.append(g)
                rates.append(rate)
        tail_spacing, tail_value = _tail(tail_rate, cost, floor, ceiling, keep)
        count = len(times)
        value = [0.0] * count
        value[-1] = survival[-1] * tail_value
        plan = cls(
            times=times,
            survival=survival,
            moment=moment,
            rates=rates,
            value=value,
            cost=cost,
            floor=floor,
            ceiling=ceiling,
            keep=keep,
            tail_rate=tail_rate,
            tail_spacing=tail_spacing,
            tail_value=tail_value,
        )
        # W backwards from the grid's end (filled in place: each step reads
        # only the values after it).
        for i in range(count - 2, -1, -1):
            value[i] = plan._best(i + 1, times[i], survival[i], moment[i])[0]
        return plan

    def next_poll(self, run: float) -> float:
        """Return the best wait (normalised seconds) for a job polled at *run*, still running."""
        times = self.times
        if run >= times[-1]:
            return self.tail_spacing
        k = bisect.bisect_right(times, run) - 1
        s, g = _segment(self.survival[k], self.moment[k], times[k], self.rates[k], run - times[k])
        if s <= 0:
            return self.tail_spacing
        _, target = self._best(k + 1, run, s, g)
        if target is None:
            return self.tail_spacing
        return target - run

    def _best(self, start: int, t: float, s: float, g: float) -> tuple[float, float | None]:
        """Return (W at *t*, the best next poll time) from grid points from *start* on.

        *s* and *g* are the survival and ``integral of x f(x)`` at *t*. The
        next poll may also leap past the grid's end, into the flat tail:
        otherwise every job would poll once exactly where the grid ends
        (the frontier), and a batch that keeps pushing its frontier forward
        would pay that poll at every step.
        """
        times, survival, moment, value = self.times, self.survival, self.moment, self.value
        best, choice = math.inf, None
        for j in range(start, len(times)):
            u = times[j]
            gap = u - t
            if gap > self.ceiling and choice is not None:
                return best, choice
            s_u = survival[j]
            if s_u < self.keep * s and choice is not None:
                return best, choice  # the step would leap over too much chance of finishing
            here = s + (u * (s - s_u) - (moment[j] - g)) / self.cost
            if here >= best:
                return best, choice  # the delay alone grows with u, and W is never negative
            if gap < self.floor and j < len(times) - 1:
                continue
            total = here + value[j]
            if total < best:
                best, choice = total, u
        return self._past_end(t, s, g, best, choice)

    def _past_end(
        self, t: float, s: float, g: float, best: float, choice: float | None
    ) -> tuple[float, float | None]:
        """Improve (*best*, *choice*) with a next poll beyond the grid's end."""
        rate, end = self.tail_rate, self.times[-1]
        s_end, g_end = self.survival[-1], self.moment[-1]
        if rate <= 0 or s_end <= 0 or choice is None:
            return best, choice
        # Past the end the hazard is flat: the best leap is near the spacing
        # sqrt(2 c / rate); try a ladder around it, within the caps.
        reach = self.ceiling - (end - t)
        if self.keep > 0:
            reach = min(reach, math.log(s_end / (self.keep * s)) / rate if s > 0 else 0.0)
        if reach <= 0:
            return best, choice
        guess = math.sqrt(2.0 * self.cost / rate)
        for step in range(-16, 9):
            x = min(guess * 2.0 ** (step / 4.0), reach)
            if end + x - t < self.floor:
                continue
            s_u, g_u = _segment(s_end, g_end, end, rate, x)
            u = end + x
            total = s + (u * (s - s_u) - (g_u - g)) / self.cost + s_u * self.tail_value
            if total < best:
                best, choice = total, u
        return best, choice
