"""The emulator's settings: run-time distributions, job plans, fault switches."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias, TypedDict, get_args

import attrs

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

SEED_MODEL: Final = "bytedance/dreamina-3-0/pro/image-to-video"
GENERIC_MODEL: Final = "acme/generic/text-to-video"

DEFAULT_MODELS: Final = frozenset({SEED_MODEL, GENERIC_MODEL})
"""The models the emulator knows by default: the seed model, validated like
the real service, and a generic model that accepts any JSON object."""

FaultName: TypeAlias = Literal[
    "server_error",
    "unavailable",
    "html_error",
    "drop_before",
    "drop_after",
    "slow",
    "rate_limited",
    "rate_limited_no_retry_after",
    "malformed",
    "error_200",
    "stray_429",
    "hang",
    "hang_after_accept",
    "malformed_http",
    "unknown_status",
    "foreign_request_id",
    "empty_file_name",
]
FAULT_ORDER: Final[tuple[FaultName, ...]] = get_args(FaultName)
FaultTarget: TypeAlias = Literal["submit", "status", "result", "cancel", "any"]
Outcome: TypeAlias = Literal["succeeded", "failed"]

_positive = attrs.validators.gt(0.0)
_non_negative = attrs.validators.ge(0.0)
_share = attrs.validators.and_(attrs.validators.ge(0.0), attrs.validators.le(1.0))


@attrs.frozen
class LogNormal:
    """Run times spread like real renders: a long right tail, never negative.

    Attributes:
        mean: The mean nominal run time in seconds.
        cv: Coefficient of variation (standard deviation / mean); 0 = fixed.

    """

    mean: float = attrs.field(default=60.0, validator=_positive)
    cv: float = attrs.field(default=0.3, validator=_non_negative)

    def draw(self, rng: random.Random) -> float:
        """Draw one nominal run time."""
        if self.cv == 0:
            return self.mean
        sigma2 = math.log1p(self.cv * self.cv)
        return rng.lognormvariate(math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2))


@attrs.frozen
class Fixed:
    """Every job runs for the same nominal number of seconds."""

    seconds: float = attrs.field(validator=_non_negative)

    def draw(self, rng: random.Random) -> float:  # noqa: ARG002 - one signature for all
        """Return the fixed run time."""
        return self.seconds


@attrs.frozen
class Uniform:
    """Run times drawn uniformly between ``low`` and ``high`` seconds."""

    low: float = attrs.field(validator=_non_negative)
    high: float = attrs.field(validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.high < self.low:
            raise ValueError(f"Uniform needs low <= high, got {self.low} > {self.high}")

    def draw(self, rng: random.Random) -> float:
        """Draw one nominal run time."""
        return rng.uniform(self.low, self.high)


RunTime: TypeAlias = LogNormal | Fixed | Uniform


def _default_error() -> object:
    return {"message": "content policy violation", "code": "E_MODEL"}


@attrs.frozen(kw_only=True)
class JobPlan:
    """How one job will go, as decided by a test's ``plan`` hook.

    Attributes:
        run_time: Nominal run time in seconds (scaled by ``time_scale``);
            None draws it from the configured distribution.
        outcome: ``"succeeded"`` or ``"failed"``.
        error: The opaque ``error`` value a failed job reports on ``/result``.

    """

    run_time: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative)
    )
    outcome: Outcome = "succeeded"
    error: object = attrs.field(factory=_default_error)


PlanHook: TypeAlias = Callable[[str, dict[str, object]], JobPlan | None]


class SupportsNow(Protocol):
    """A clock object, such as ``runcomfy_async``'s ``VirtualClock``."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...


ClockSource: TypeAlias = Callable[[], float] | SupportsNow
"""A zero-argument callable returning seconds, or an object with ``now()``."""


def clock_reader(clock: ClockSource) -> Callable[[], float]:
    """Return the zero-argument function that reads ``clock``.

    An object with a ``now()`` method is read through it (so one virtual
    clock can drive a client and the emulator); anything else must be a
    callable, like ``time.monotonic`` or a :class:`ManualClock`.
    """
    now = getattr(clock, "now", None)
    if callable(now):
        reader: Callable[[], float] = now
        return reader
    if callable(clock):
        return clock
    raise TypeError(f"a clock is a callable or has a now() method, not {clock!r}")


@attrs.frozen(kw_only=True)
class Faults:
    """Switches for every documented drift and failure; all off by default.

    Deterministic drifts:
        submit_202: Submit answers 202 with ``status: "in_queue"`` in the body.
        failed_on_status: Failed jobs show ``failed`` on ``/status`` (instead
            of ``completed``).
        canceled_spelling: ``canceled`` instead of ``cancelled`` everywhere.
        upper_case_status: Status values in UPPER case.
        result_not_ready: ``/result`` on an unfinished job answers HTTP 400
            with error_code 400005 (instead of 200 and the current status).
        errors_as_200: Every JSON error is sent as HTTP 200 (the body keeps its
            non-null ``error_code``). 429s and HTML gateway errors stay as they
            are: they stand for the CDN in front of the API.
        status_completed_for_success: ``completed`` on ``/status`` for a
            finished job (documented); False shows ``succeeded`` there too.
        submit_delay: Nominal seconds (times ``time_scale``) that an accepted
            submit's answer is held back: the job exists and is billed at
            once, the client hears of it only later (or never, if it goes
            away first). Real seconds, or the clock's own if it has timers.

    Probabilistic faults, one ``<fault>_rate`` per fault name (a share 0..1 of
    the API requests the fault can hit; seeded; at most one fault per
    request; their sum must be <= 1). Each fault can also be scripted with
    :meth:`FakeRunComfy.inject`:
        server_error_rate: 500 with a JSON body, error_code 500001.
        unavailable_rate: 503 with a JSON body, before processing (the one
            5xx the contract says was not accepted).
        html_error_rate: 502 with an HTML body (``text/html``).
        drop_before_rate: The connection closes before anything happened.
        drop_after_rate: The request is processed (a submit creates a job),
            then the connection closes without an answer.
        slow_rate: The answer comes ``slow_seconds`` (nominal) late.
        rate_limited_rate: A 429, with a ``Retry-After`` of 1 nominal second
            (in the ``retry_after`` style).
        rate_limited_no_retry_after_rate: A 429 without ``Retry-After``.
        malformed_rate: The request is processed, then answered 200 with a
            body that is not JSON or lacks required fields.
        error_200_rate: HTTP 200 with error_code 500001, nothing done.
        stray_429_rate: A 429 with a literal ``Retry-After: 1`` (whatever
            ``time_scale`` and ``retry_after`` say), though no rate limit was
            hit: nothing done.
        hang_rate: The request is read, nothing is done and nothing is ever
            answered, until the client goes away.
        hang_after_accept_rate: The request is processed (a submit creates
            a job, a cancel cancels), then never answered.
        malformed_http_rate: The request is processed, then answered with
            bytes that are not HTTP at all, and the connection closed.
        unknown_status_rate: ``/status`` or ``/result`` answers with the
            status word ``unknown_word``, which the contract does not know.
        foreign_request_id_rate: The answer's ``request_id`` is
            ``foreign_id`` instead of the job's own (a path-traversal probe).
        empty_file_name_rate: A succeeded ``/result`` gives output URLs whose
            last path segment (``%3F%3F``, i.e. ``??``) sanitises to an
            empty file name; the files are still served there.

    Fault details:
        slow_seconds: How late a ``slow`` answer comes (nominal seconds).
        foreign_id: The ``request_id`` a ``foreign_request_id`` answer shows.
        unknown_word: The status a ``unknown_status`` answer shows.

    Rate limiting:
        retry_after: How every 429 says when to come back: ``"seconds"``,
            ``"date"`` (an HTTP date) or ``"none"`` (no header).
        rate_limit: A hidden limit on API requests per real (unscaled) second,
            over all tokens; None = no limit. Over it: 429.
        rate_burst: The token bucket's depth (requests allowed at once).

    Output files:
        slow_file: Serve output files at this many bytes per nominal second
            (``slow_file / time_scale`` real bytes per second); None = at once.
        big_file: Serve every output file as this many bytes (an MP4 header,
            then zeros), streamed and never held in memory; None = a few
            hundred bytes.

    """

    submit_202: bool = False
    failed_on_status: bool = False
    canceled_spelling: bool = False
    upper_case_status: bool = False
    result_not_ready: bool = False
    errors_as_200: bool = False
    status_completed_for_success: bool = True
    submit_delay: float = attrs.field(default=0.0, validator=_non_negative)
    server_error_rate: float = attrs.field(default=0.0, validator=_share)
    unavailable_rate: float = attrs.field(default=0.0, validator=_share)
    html_error_rate: float = attrs.field(default=0.0, validator=_share)
    drop_before_rate: float = attrs.field(default=0.0, validator=_share)
    drop_after_rate: float = attrs.field(default=0.0, validator=_share)
    slow_rate: float = attrs.field(default=0.0, validator=_share)
    rate_limited_rate: float = attrs.field(default=0.0, validator=_share)
    rate_limited_no_retry_after_rate: float = attrs.field(default=0.0, validator=_share)
    malformed_rate: float = attrs.field(default=0.0, validator=_share)
    error_200_rate: float = attrs.field(default=0.0, validator=_share)
    stray_429_rate: float = attrs.field(default=0.0, validator=_share)
    hang_rate: float = attrs.field(default=0.0, validator=_share)
    hang_after_accept_rate: float = attrs.field(default=0.0, validator=_share)
    malformed_http_rate: float = attrs.field(default=0.0, validator=_share)
    unknown_status_rate: float = attrs.field(default=0.0, validator=_share)
    foreign_request_id_rate: float = attrs.field(default=0.0, validator=_share)
    empty_file_name_rate: float = attrs.field(default=0.0, validator=_share)
    slow_seconds: float = attrs.field(default=5.0, validator=_non_negative)
    foreign_id: str = "../../escaped"
    unknown_word: str = "paused"
    retry_after: Literal["seconds", "date", "none"] = "seconds"
    rate_limit: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    rate_burst: float = attrs.field(default=1.0, validator=attrs.validators.ge(1.0))
    slow_file: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    big_file: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )

    def __attrs_post_init__(self) -> None:
        total = sum(rate for _, rate in self.rates())
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:.3f}; they must be <= 1")

    def rates(self) -> tuple[tuple[FaultName, float], ...]:
        """Return every fault and its share, in a fixed order."""
        return tuple((name, getattr(self, f"{name}_rate")) for name in FAULT_ORDER)

    @classmethod
    def chaos(
        cls,
        rate: float = 0.03,
        *,
        exclude: Iterable[FaultName] = (),
        base: Faults | None = None,
    ) -> Faults:
        """Every fault at once: ``rate`` split evenly over all fault names.

        Args:
            rate: The total share of API requests hit by some fault (0..1).
                A fault that cannot hit a kind of request (``empty_file_name``
                only hits ``/result``, ``unknown_status`` only ``/status`` and
                ``/result``) leaves those requests alone, so a submit meets a
                fault slightly less often than ``rate``.
            exclude: Fault names to leave out (their rate is 0).
            base: Other switches to keep (``slow_seconds``, drifts, ...);
                its rates are replaced.

        Raises:
            ValueError: ``rate`` is not a share, an excluded name is not a
                fault, or every fault is excluded.

        """
        left_out = frozenset(exclude)
        unknown = left_out - frozenset(FAULT_ORDER)
        if unknown:
            raise ValueError(f"unknown fault names {sorted(unknown)}")
        names = [name for name in FAULT_ORDER if name not in left_out]
        if not names:
            raise ValueError("every fault is excluded")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be a share 0..1, got {rate}")
        share = rate / len(names)
        changes: dict[str, Any] = {
            f"{name}_rate": (share if name in names else 0.0) for name in FAULT_ORDER
        }
        return attrs.evolve(base if base is not None else cls(), **changes)


def _tokens(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _models(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """Everything :class:`FakeRunComfy` can be told; see its docs for each.

    Attributes:
        token: The account's API token.
        other_tokens: Valid tokens of other accounts: a job read or cancelled
            with another account's token answers 403 (403001).
        time_scale: Multiplies every nominal duration (run times, slow
            answers, latency, ``Retry-After`` values sent for faults).
        slots: Jobs of one account that run at once; the rest wait FIFO
            ``in_queue``. None = unlimited.
        run_time: The nominal run-time distribution.
        seed: Seeds the emulator's own random generators.
        failure_rate: Share of jobs that end ``failed``.
        plan: ``plan(model_id, payload)`` may return a :class:`JobPlan` to
            decide a job; None keeps the default behaviour.
        models: Known model ids; others answer 404 (400001).
        balance: Account balance in USD; None = unlimited. Each submit costs
            the job's cost; a submit that would go below zero answers 402.
        cost_per_second: USD per nominal second of run time.
        output: ``"video"`` (``{"video": url}``) or ``"videos"`` (a list).
        faults: The fault switches.
        latency: Nominal seconds added before every API answer.
        clock: The emulator clock: a zero-argument callable returning
            seconds, or an object with a ``now()`` method (such as
            ``runcomfy_async.VirtualClock``); jobs advance on it. If it also
            has ``call_at(when, callback)``, the emulator's waits (latency,
            slow answers, ``submit_delay``) run on its timers too.
        record: Keep every request in :attr:`FakeRunComfy.requests`.
        record_bodies: Keep request bodies in the recorded requests.

    """

    token: str = "test-token"  # noqa: S105 - a fake server's fake token
    other_tokens: tuple[str, ...] = attrs.field(default=(), converter=_tokens)
    time_scale: float = attrs.field(default=1.0, validator=_positive)
    slots: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    run_time: RunTime = attrs.field(factory=LogNormal)
    seed: int = 0
    failure_rate: float = attrs.field(default=0.0, validator=_share)
    plan: PlanHook | None = None
    models: frozenset[str] = attrs.field(default=DEFAULT_MODELS, converter=_models)
    balance: float | None = None
    cost_per_second: float = attrs.field(default=0.0075, validator=_non_negative)
    output: Literal["video", "videos"] = "video"
    faults: Faults = attrs.field(factory=Faults)
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    clock: ClockSource = time.monotonic
    record: bool = True
    record_bodies: bool = True


class EmulatorOptions(TypedDict, total=False):
    """The keyword arguments :class:`FakeRunComfy` accepts (see EmulatorConfig)."""

    token: str
    other_tokens: Iterable[str]
    time_scale: float
    slots: int | None
    run_time: RunTime
    seed: int
    failure_rate: float
    plan: PlanHook | None
    models: Iterable[str]
    balance: float | None
    cost_per_second: float
    output: Literal["video", "videos"]
    faults: Faults
    latency: float
    clock: ClockSource
    record: bool
    record_bodies: bool


@attrs.define
class ManualClock:
    """A clock that only moves when told to, so tests never wait.

    Pass it as ``clock=``; then ``clock.advance(60)`` moves every job 60 clock
    seconds on (a nominal run time of ``t`` lasts ``t * time_scale`` of them).
    """

    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward; it never goes back."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        self.now += seconds
