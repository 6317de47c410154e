"""Admission: the token bucket, the rate controller, and LocalAdmission in virtual time."""

from __future__ import annotations

import itertools
import math
import random

import anyio
import attrs
import pytest

from runcomfy_async import Limits
from runcomfy_async._admission import (
    AIMDController,
    ByteBudget,
    LocalAdmission,
    Signal,
    Throttle,
    Ticket,
    TokenBucket,
)
from runcomfy_async._clock import VirtualClock, sleep

# -- the token bucket -------------------------------------------------------------


def test_bucket_serves_its_burst_then_paces_at_its_rate():
    """A full bucket serves `burst` at once, then one token per 1/rate."""
    bucket = TokenBucket(rate=10.0, burst=3.0)
    waits = [bucket.reserve(0.0) for _ in range(5)]
    assert [0.0, 0.0, 0.0] == waits[:3]
    assert pytest.approx([0.1, 0.2]) == waits[3:]


def test_bucket_refills_with_time_but_never_past_its_burst():
    """Idle time refills the bucket up to its burst, no further."""
    bucket = TokenBucket(rate=10.0, burst=2.0)
    for _ in range(2):
        bucket.reserve(0.0)
    assert 0.0 == bucket.reserve(10.0)
    assert 0.0 == bucket.reserve(10.0)
    assert pytest.approx(0.1) == bucket.reserve(10.0)


def test_rate_change_keeps_what_was_earned():
    """set_rate settles the tokens earned at the old rate first."""
    bucket = TokenBucket(rate=10.0, burst=5.0)
    for _ in range(5):
        bucket.reserve(0.0)
    bucket.set_rate(1.0, 0.2)  # two tokens earned at 10/s
    assert 0.0 == bucket.reserve(0.2)
    assert 0.0 == bucket.reserve(0.2)
    assert pytest.approx(1.0) == bucket.reserve(0.2)


# -- the controller (pure: time is passed in) --------------------------------------


def _answers(aimd: AIMDController, start: float, rate: float, pattern: str) -> float:
    """Feed answers *rate* a second from *start*: "." accepted, "x" a 429; return the end."""
    now = start
    for mark in pattern:
        now += 1.0 / rate
        if mark == "x":
            aimd.on_rate_limited(sent_at=now - 0.01, now=now)
        else:
            aimd.on_success(now - 0.01, now, rate_bound=False)
    return now


def test_slow_start_grows_by_one_per_rate_bound_success():
    """Before any congestion the rate grows by one per request the rate held back."""
    aimd = AIMDController(rate=10.0, min_rate=1.0, max_rate=1000.0)
    assert Signal.KEPT == aimd.on_success(0.0, 0.1, rate_bound=False)
    assert 10.0 == aimd.rate
    for i in range(10):
        aimd.on_success(0.0, 0.1 + i / 100, rate_bound=True)
    assert 20.0 == aimd.rate


def test_an_isolated_429_is_not_congestion():
    """One or two 429s among many answers change nothing."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0)
    _answers(aimd, 0.0, 100.0, "." * 40 + "x" + "." * 40 + "x" + "." * 40)
    assert 100.0 == aimd.rate
    assert aimd.slow_start


def test_a_cluster_of_429s_cuts_to_just_under_what_was_accepted():
    """Three 429s in a window are congestion: the rate drops under the accepted rate."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0)
    _answers(aimd, 0.0, 80.0, "." * 80 + "xx")
    assert 100.0 == aimd.rate
    now = 80 / 80 + 3 / 80
    assert Signal.CUT == aimd.on_rate_limited(sent_at=now - 0.01, now=now)
    # 80 accepted over the last second: 80 * sqrt(0.85), under 100 * 0.85.
    assert pytest.approx(80 * 0.85**0.5, rel=0.03) == aimd.rate
    assert not aimd.slow_start


def test_a_429_booked_before_a_cut_is_an_echo():
    """Requests booked before the last cut belong to that event: no second cut."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0)
    end = _answers(aimd, 0.0, 100.0, "xxx")
    after_cut = aimd.rate
    assert after_cut < 100.0
    for i in range(10):
        assert Signal.KEPT == aimd.on_rate_limited(sent_at=end - 0.5, now=end + i / 100)
    assert after_cut == aimd.rate


def test_most_answers_429_asks_for_a_pause():
    """When the server refuses most requests, the cut also says: pause."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0)
    _answers(aimd, 0.0, 100.0, "x.x")
    assert Signal.REFUSED == aimd.on_rate_limited(sent_at=0.03, now=0.04)


def test_after_a_cut_the_rate_recovers_additively():
    """Out of slow start, each rate-bound success adds increase/rate."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0, increase=2.0)
    end = _answers(aimd, 0.0, 100.0, "xxx")
    low = aimd.rate
    for i in range(int(low)):  # about one second's worth of requests
        aimd.on_success(end, end + 0.01 * (i + 1), rate_bound=True)
    assert pytest.approx(low + 2.0, rel=0.05) == aimd.rate


def test_the_rate_stays_within_its_bounds():
    """Cuts stop at min_rate and increases at max_rate."""
    aimd = AIMDController(rate=4.0, min_rate=2.0, max_rate=5.0, decrease=0.1)
    _answers(aimd, 0.0, 10.0, "xxx")
    assert 2.0 == aimd.rate
    aimd.slow_start = True
    for i in range(20):
        aimd.on_success(1.0, 1.0 + i / 10, rate_bound=True)
    assert 5.0 == aimd.rate


def test_a_cut_whose_429s_go_on_is_undone_and_learnt():
    """429s at the same share after a cut are stray: the rate comes back, slow start too."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0)
    end = _answers(aimd, 0.0, 100.0, "." * 60 + "x" + "." * 20 + "x" + "." * 10 + "x")
    assert aimd.rate < 100.0
    # Answers to requests booked after the cut: still a 429 in every 30.
    signals = []
    now = end
    for mark in ("." * 29 + "x") * 6:
        now += 0.012
        if mark == "x":
            signals.append(aimd.on_rate_limited(sent_at=now - 0.01, now=now))
        else:
            signals.append(aimd.on_success(now - 0.01, now, rate_bound=False))
    assert Signal.UNDONE in signals
    assert 100.0 == aimd.rate
    assert aimd.slow_start
    assert 0.01 < aimd.background < 0.1


def test_a_cut_after_which_the_429s_stop_stands():
    """Under a real limit the 429s stop after the cut: it is not undone."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0)
    end = _answers(aimd, 0.0, 100.0, "." * 90 + "xxx")
    after_cut = aimd.rate
    now = end
    for _ in range(300):
        now += 0.012
        assert Signal.UNDONE != aimd.on_success(now - 0.01, now, rate_bound=False)
    assert after_cut == aimd.rate
    assert aimd._check is None
    assert 0.0 == aimd.background


def test_with_a_known_background_only_a_clear_excess_is_congestion():
    """Once 3 % of stray 429s are expected, 3 % is not a cluster; 20 % is."""
    aimd = AIMDController(rate=100.0, min_rate=1.0, max_rate=1000.0, background=0.03)
    _answers(aimd, 0.0, 100.0, ("." * 32 + "x") * 6)
    assert 100.0 == aimd.rate
    _answers(aimd, 2.0, 100.0, ("." * 4 + "x") * 20)
    assert aimd.rate < 100.0


# -- LocalAdmission in virtual time --------------------------------------------------


def test_throttle_is_the_old_name():
    """The old name still builds the default admission."""
    assert Throttle is LocalAdmission


async def test_admission_paces_at_its_rate_exactly():
    """After the burst, sends are exactly 1/rate apart on the injected clock."""
    clock = VirtualClock()
    admission = LocalAdmission(Limits(initial_rate=50.0, burst=2.0), clock)
    sent: list[float] = []
    async with clock.autojumping():
        for _ in range(6):
            ticket = await admission.acquire("status")
            sent.append(clock.now())
            admission.release(ticket)
    assert pytest.approx([0.0, 0.0, 0.02, 0.04, 0.06, 0.08]) == sent


async def test_acquire_names_the_kind_and_defaults_to_status():
    """The ticket carries the exchange's kind; acquire() alone still works."""
    clock = VirtualClock()
    admission = LocalAdmission(Limits(), clock)
    submit = await admission.acquire("submit")
    plain = await admission.acquire()
    assert ("submit", "status") == (submit.kind, plain.kind)
    assert 2 == admission.in_use
    admission.release(submit)
    admission.release(plain)
    assert 0 == admission.in_use


async def test_a_refusing_server_pauses_every_sender_for_retry_after():
    """Most answers 429: nobody sends before Retry-After has passed, then one token apart."""
    clock = VirtualClock(start=100.0)
    admission = LocalAdmission(Limits(initial_rate=100.0, burst=50.0), clock)
    for _ in range(3):
        admission.on_rate_limited(Ticket(clock.now(), rate_bound=False), retry_after=2.0)
    rate = admission.rate
    assert rate < 100.0
    sent: list[float] = []
    async with clock.autojumping():
        for _ in range(4):
            ticket = await admission.acquire("status")
            sent.append(clock.now())
            admission.release(ticket)
    assert pytest.approx(102.0 + 1.0 / rate) == sent[0]  # the pause saved no burst
    assert all(pytest.approx(1.0 / rate) == b - a for a, b in itertools.pairwise(sent))


async def test_a_stray_429_holds_back_no_one_else():
    """An isolated 429 with Retry-After leaves the pace alone."""
    clock = VirtualClock()
    admission = LocalAdmission(Limits(initial_rate=100.0, burst=1.0), clock)
    ticket = await admission.acquire("status")
    admission.release(ticket)
    admission.on_rate_limited(ticket, retry_after=30.0)
    async with clock.autojumping():
        ticket = await admission.acquire("status")
        admission.release(ticket)
    assert pytest.approx(0.01) == clock.now()
    assert 100.0 == admission.rate


async def test_admission_caps_concurrent_exchanges():
    """No more slots are held at once than max_concurrent_requests."""
    clock = VirtualClock()
    admission = LocalAdmission(
        Limits(max_concurrent_requests=2, initial_rate=10_000.0, burst=100.0), clock
    )
    peak = 0

    async def hold() -> None:
        nonlocal peak
        ticket = await admission.acquire("status")
        try:
            peak = max(peak, admission.in_use)
            await sleep(clock, 1.0)
        finally:
            admission.release(ticket)

    async with clock.autojumping(), anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(hold)
    assert 2 == peak
    assert 0 == admission.in_use
    assert 3.0 == clock.now()


# -- a hidden-limit server, simulated on the same clock --------------------------------


@attrs.define
class _Server:
    """A token bucket over all callers (the hidden limit) plus stray 429s."""

    clock: VirtualClock
    limit: float | None
    burst: float
    stray: float
    rng: random.Random = attrs.field(factory=lambda: random.Random(7))
    tokens: float = math.nan
    last: float = 0.0
    accepted: dict[int, int] = attrs.field(factory=dict)
    rejected: int = 0

    def answer(self, caller: int) -> bool:
        """Say whether this request is accepted now."""
        if self.rng.random() < self.stray:
            self.rejected += 1
            return False
        if self.limit is not None:
            now = self.clock.now()
            if math.isnan(self.tokens):
                self.tokens = self.burst
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.limit)
            self.last = now
            if self.tokens < 1.0:
                self.rejected += 1
                return False
            self.tokens -= 1.0
        self.accepted[caller] = self.accepted.get(caller, 0) + 1
        return True


_LATENCY = 0.02
_RETRY_AFTER = 1.0


async def _simulate(
    server: _Server,
    *,
    clients: int = 1,
    senders: int = 64,
    until: float = math.inf,
    work: int | None = None,
    warmup: float = 0.0,
) -> tuple[float, list[int]]:
    """Drive *senders* per client through LocalAdmission; return (end time, accepted after warmup).

    A 429'd sender waits Retry-After, as the client's retry does. With *work*,
    the run ends when that many requests were accepted.
    """
    clock = server.clock
    limits = Limits(max_concurrent_requests=32)
    admissions = [LocalAdmission(limits, clock) for _ in range(clients)]
    left: list[float] = [work if work is not None else math.inf]
    at_warmup: list[int] = []

    def done() -> bool:
        return left[0] <= 0 or clock.now() >= until

    async def sender(caller: int, admission: LocalAdmission) -> None:
        while not done():
            ticket = await admission.acquire("status")
            try:
                accepted = server.answer(caller)
                await sleep(clock, _LATENCY)
            finally:
                admission.release(ticket)
            if accepted:
                admission.on_success(ticket)
                left[0] -= 1
            else:
                admission.on_rate_limited(ticket, _RETRY_AFTER)
                await sleep(clock, _RETRY_AFTER)

    async def mark_warmup() -> None:
        await sleep(clock, warmup)
        at_warmup.extend(server.accepted.get(i, 0) for i in range(clients))

    async with clock.autojumping(io=False), anyio.create_task_group() as group:
        group.start_soon(mark_warmup)
        for caller, admission in enumerate(admissions):
            for _ in range(senders):
                group.start_soon(sender, caller, admission)
    end = clock.now()
    after = [server.accepted.get(i, 0) - at_warmup[i] for i in range(clients)]
    return end, after


@pytest.mark.parametrize("limit", [100.0, 200.0], ids=["100-per-s", "200-per-s"])
async def test_a_hidden_limit_is_found_and_held(limit):
    """>= 90 % of a hidden limit held after warm-up, <= 5 % of all requests rejected."""
    server = _Server(VirtualClock(), limit=limit, burst=limit / 10, stray=0.0)
    duration, warmup = 60.0, 10.0
    _, accepted = await _simulate(server, until=duration, warmup=warmup)
    held = accepted[0] / (duration - warmup) / limit
    total = sum(server.accepted.values()) + server.rejected
    assert held >= 0.9, held
    assert server.rejected / total <= 0.05, (server.rejected, total)


async def test_three_percent_stray_429s_cost_little():
    """3 % random 429s and no limit: the same work within 1.5 x the clean time.

    Over five seeds, the median run meets the design target and none
    collapses (before the stray-429 rules: 10-15 x in this simulation). An
    early false cut still costs some runs seconds of slow start, which is
    why the worst is allowed more. Enough senders that those waiting out a
    429's Retry-After do not starve the pool: the cost is the admission's.
    """
    clean = _Server(VirtualClock(), limit=None, burst=1.0, stray=0.0)
    clean_end, _ = await _simulate(clean, work=10_000, senders=256)
    ratios = []
    for seed in range(5):
        stray = _Server(VirtualClock(), limit=None, burst=1.0, stray=0.03, rng=random.Random(seed))
        stray_end, _ = await _simulate(stray, work=10_000, senders=256)
        assert stray.rejected > 200  # the stray 429s did happen
        ratios.append(stray_end / clean_end)
    assert sorted(ratios)[2] <= 1.5, ratios
    assert max(ratios) <= 2.5, ratios


@pytest.mark.parametrize("clients", [2, 3], ids=["two-clients", "three-clients"])
async def test_clients_on_one_token_share_a_hidden_limit_fairly(clients):
    """Several processes, no coordinator: together >= 90 % held, each near its fair share."""
    limit = 200.0
    server = _Server(VirtualClock(), limit=limit, burst=20.0, stray=0.0)
    duration, warmup = 240.0, 60.0
    _, accepted = await _simulate(server, clients=clients, until=duration, warmup=warmup)
    total = sum(accepted)
    assert total / (duration - warmup) / limit >= 0.9
    everyone = sum(server.accepted.values()) + server.rejected
    assert server.rejected / everyone <= 0.05
    for share in (a / total for a in accepted):
        assert abs(share - 1 / clients) <= 0.25 / clients, accepted


async def test_a_byte_budget_holds_bodies_in_flight_under_its_capacity():
    """Bodies wait until they fit; one larger than the whole budget goes alone."""
    budget = ByteBudget(100)
    peak = 0

    async def body(size: int, clock: VirtualClock) -> None:
        nonlocal peak
        taken = await budget.acquire(size)
        peak = max(peak, budget.used)
        await sleep(clock, 1.0)
        budget.release(taken)

    clock = VirtualClock()
    async with clock.autojumping(io=False), anyio.create_task_group() as group:
        for size in (40, 40, 40, 250, 10):
            group.start_soon(body, size, clock)
    assert peak <= 100
    assert 0 == budget.used
