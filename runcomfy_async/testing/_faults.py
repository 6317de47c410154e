"""Choosing faults: scripted ones first, then seeded random ones; rate limits."""

from __future__ import annotations

import math
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Final, get_args

import attrs

from ._config import FaultName, FaultTarget

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from ._config import Faults

FAULT_NAMES: Final = frozenset(get_args(FaultName))
FAULT_TARGETS: Final = frozenset(get_args(FaultTarget))
API_KINDS: Final = ("submit", "status", "result", "cancel")

# The requests a fault can show on; every other fault hits all four kinds.
_ONLY_ON: Final[dict[FaultName, frozenset[str]]] = {
    "unknown_status": frozenset({"status", "result"}),
    "empty_file_name": frozenset({"result"}),
}


def fault_applies(fault: FaultName, kind: str) -> bool:
    """Whether ``fault`` can show on a request of ``kind``."""
    return kind in _ONLY_ON.get(fault, API_KINDS)


@attrs.define
class _Scripted:
    target: FaultTarget
    fault: FaultName
    remaining: int


@attrs.define
class FaultPicker:
    """Decides which fault, if any, hits an API request."""

    faults: Faults
    rng: random.Random
    scripted: list[_Scripted] = attrs.Factory(list)
    _tables: dict[str, tuple[tuple[float, FaultName], ...]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # One cumulative table per kind of request, holding the faults that
        # can show there: a rate is a share of the requests it can hit.
        self._tables = {}
        for kind in API_KINDS:
            table, total = [], 0.0
            for name, rate in self.faults.rates():
                if rate > 0 and fault_applies(name, kind):
                    total += rate
                    table.append((total, name))
            self._tables[kind] = tuple(table)

    def inject(self, target: FaultTarget, fault: FaultName, times: int) -> None:
        """Queue a fault for the next ``times`` requests of a kind."""
        if target not in FAULT_TARGETS:
            raise ValueError(f"unknown request kind {target!r}")
        if fault not in FAULT_NAMES:
            raise ValueError(f"unknown fault {fault!r}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        if target != "any" and not fault_applies(fault, target):
            raise ValueError(f"{fault!r} cannot show on a {target} request")
        self.scripted.append(_Scripted(target, fault, times))

    def pending(self) -> int:
        """How many scripted faults are still to be served."""
        return sum(s.remaining for s in self.scripted)

    def pick(self, kind: str) -> FaultName | None:
        """Choose the fault for one request of ``kind`` (scripted ones first)."""
        for i, scripted in enumerate(self.scripted):
            if scripted.target in {kind, "any"} and fault_applies(scripted.fault, kind):
                scripted.remaining -= 1
                if not scripted.remaining:
                    del self.scripted[i]
                return scripted.fault
        # Draw only when some rate is set: with no random faults configured,
        # the request stream does not consume the generator.
        table = self._tables.get(kind)
        if not table:
            return None
        draw = self.rng.random()
        for bound, name in table:
            if draw < bound:
                return name
        return None


@attrs.define
class TokenBucket:
    """The hidden rate limit: ``rate`` requests per real second, ``burst`` deep."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _tokens: float = attrs.field(init=False)
    _last: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._tokens = self.burst
        self._last = self.clock()

    def take(self) -> float:
        """Take a token: 0.0 if one was free, else the seconds until one is."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


def retry_after_value(seconds: float, *, whole: bool, style: str) -> str | None:
    """Format a ``Retry-After`` header, or None when 429s carry none.

    ``whole`` rounds up to whole seconds (at least 1), as real servers send;
    otherwise the value is rounded up to the millisecond, so scaled-down tests
    wait milliseconds.
    """
    if style == "none":
        return None
    if whole:
        seconds = max(1.0, math.ceil(seconds))
    else:
        seconds = max(0.001, math.ceil(seconds * 1000 - 1e-6) / 1000)
    if style == "date":
        # HTTP dates have whole seconds: round up, never announce a wait too short.
        return formatdate(math.ceil(time.time() + seconds), usegmt=True)
    if whole:
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")
