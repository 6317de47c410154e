"""The emulator's settings: run-time distributions, job plans, fault switches."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, TypedDict

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
]
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

    Probabilistic faults (shares 0..1 of API requests, seeded, at most one per
    request; their sum must be <= 1):
        server_error_rate: 500 with a JSON body, error_code 500001.
        unavailable_rate: 503 with a JSON body, before processing (the one
            5xx the contract says was not accepted).
        html_error_rate: 502 with an HTML body (``text/html``).
        drop_before_rate: The connection closes before anything happened.
        drop_after_rate: The request is processed (a submit creates a job),
            then the connection closes without an answer.
        slow_rate: The answer comes ``slow_seconds`` (nominal) late.
        rate_limited_rate: A 429, with a ``Retry-After`` of 1 nominal second.
        malformed_rate: The request is processed, then answered 200 with a
            body that is not JSON or lacks required fields.

    Rate limiting:
        retry_after: How every 429 says when to come back: ``"seconds"``,
            ``"date"`` (an HTTP date) or ``"none"`` (no header).
        rate_limit: A hidden limit on API requests per real (unscaled) second,
            over all tokens; None = no limit. Over it: 429.
        rate_burst: The token bucket's depth (requests allowed at once).

    """

    submit_202: bool = False
    failed_on_status: bool = False
    canceled_spelling: bool = False
    upper_case_status: bool = False
    result_not_ready: bool = False
    errors_as_200: bool = False
    status_completed_for_success: bool = True
    server_error_rate: float = attrs.field(default=0.0, validator=_share)
    unavailable_rate: float = attrs.field(default=0.0, validator=_share)
    html_error_rate: float = attrs.field(default=0.0, validator=_share)
    drop_before_rate: float = attrs.field(default=0.0, validator=_share)
    drop_after_rate: float = attrs.field(default=0.0, validator=_share)
    slow_rate: float = attrs.field(default=0.0, validator=_share)
    slow_seconds: float = attrs.field(default=5.0, validator=_non_negative)
    rate_limited_rate: float = attrs.field(default=0.0, validator=_share)
    malformed_rate: float = attrs.field(default=0.0, validator=_share)
    retry_after: Literal["seconds", "date", "none"] = "seconds"
    rate_limit: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    rate_burst: float = attrs.field(default=1.0, validator=attrs.validators.ge(1.0))

    def __attrs_post_init__(self) -> None:
        total = sum(rate for _, rate in self.rates())
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:.3f}; they must be <= 1")

    def rates(self) -> tuple[tuple[FaultName, float], ...]:
        """Return the probabilistic faults and their shares, in a fixed order."""
        return (
            ("server_error", self.server_error_rate),
            ("unavailable", self.unavailable_rate),
            ("html_error", self.html_error_rate),
            ("drop_before", self.drop_before_rate),
            ("drop_after", self.drop_after_rate),
            ("slow", self.slow_rate),
            ("rate_limited", self.rate_limited_rate),
            ("malformed", self.malformed_rate),
        )


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
        clock: The emulator clock (seconds); jobs advance on it.
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
    clock: Callable[[], float] = time.monotonic
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
    clock: Callable[[], float]
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
