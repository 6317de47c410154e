"""The four API calls, each one exchange plus the retries that are safe.

What may be repeated is decided in one place, :func:`_retryable` (with
:func:`_not_accepted` for the paid submit):

============================  ===================  ============================
fault                         status/result/cancel submit (paid, no idempotency)
============================  ===================  ============================
connection never made         retry                retry (provably not sent)
dropped or timed out          retry                SubmissionUncertainError
429                           retry (Retry-After)  retry (not accepted)
503                           retry                retry (not accepted)
other 5xx, malformed answer   retry                SubmissionUncertainError
unknown status word           raise at once        (not applicable)
other 4xx                     raise                raise
============================  ===================  ============================

Every retry goes through the one loop, :func:`~._retry.retrying`, bounded by
attempts and by the policy's total time budget. A paid submit is shielded
from cancellation only while its body may be on the wire (a lost answer is a
billed job nobody knows of); waiting for a send slot, and the backoff between
tries, are not shielded, so a submit that was not yet accepted can always be
dropped at once.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import anyio

from ._admission import Admission, ByteBudget, Kind
from ._clock import Clock, RealClock
from ._config import RetryPolicy
from ._errors import (
    APIError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    SubmissionUncertainError,
    TransportError,
)
from ._events import Monitor, RequestRetried, logger
from ._models import (
    Cancelled,
    CancelOutcome,
    Completed,
    Failed,
    Queued,
    Running,
    Submission,
    Succeeded,
)
from ._requests import Request
from ._retry import retrying
from ._transport import Transport
from ._wire import (
    RESULT_PARAMS,
    Reply,
    cancel_path,
    parse_cancel,
    parse_result,
    parse_status,
    parse_submission,
    result_path,
    status_path,
    submit_path,
)

T = TypeVar("T")

_RETRYABLE = (RateLimitedError, ServerError, ProtocolError, TransportError)


def _retryable(error: Exception) -> bool:
    """Say whether an exchange that failed with *error* is worth another try."""
    if isinstance(error, ProtocolError):
        return error.retryable
    return isinstance(error, _RETRYABLE)


def _not_accepted(error: Exception) -> bool:
    """Say whether a failed submit provably created no job."""
    if isinstance(error, TransportError):
        return not error.sent
    if isinstance(error, RateLimitedError):
        return True
    return isinstance(error, ServerError) and error.status == 503


def _hint(error: Exception) -> float | None:
    return error.retry_after if isinstance(error, RateLimitedError) else None


class Wire:
    """Shields paid exchanges while they are on the wire; can cut them at a bound.

    A submit's exchange runs in a shielded scope so that no cancellation loses
    its answer. Closing a client waits for such exchanges, but not forever:
    :meth:`cut` cancels them (their submits end as uncertain).
    """

    __slots__ = ("_cut", "_scopes")

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self._cut = False

    def __repr__(self) -> str:
        return f"<Wire on_wire={len(self._scopes)}>"

    @contextlib.contextmanager
    def shielded(self) -> Iterator[anyio.CancelScope]:
        """Shield one exchange; check ``cancelled_caught`` after the block."""
        scope = anyio.CancelScope(shield=True)
        if self._cut:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def cut(self) -> None:
        """Stop waiting for every shielded exchange, now and from now on."""
        self._cut = True
        for scope in list(self._scopes):
            scope.cancel()


class API:
    """Single calls with safe retries, shared by the engine and by users."""

    def __init__(
        self,
        transport: Transport,
        admission: Admission,
        retry: RetryPolicy,
        monitor: Monitor,
        *,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
        max_body_bytes: int = 32 << 20,
    ) -> None:
        self._transport = transport
        self._admission = admission
        self._retry = retry
        self._monitor = monitor
        self._clock: Clock = clock if clock is not None else RealClock()
        self._rand = rand
        self.wire = Wire()
        self._bodies = ByteBudget(max_body_bytes)

    def __repr__(self) -> str:
        return f"<API {self._transport.base_url}>"

    async def submit(
        self,
        request: Request,
        *,
        on_retry: Callable[[], None] | None = None,
        on_wire: Callable[[bool], None] | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Submission:
        """Submit one job (paid). Never re-sent unless provably not accepted.

        The body is built (a local image read and encoded) just before it is
        sent, and dropped once the submit is answered. *on_wire* hears
        ``on_wire(True)`` as each try's body is about to leave and
        ``on_wire(False)`` once its answer is in: in between, cancelling the
        caller does not drop the submit (its answer is awaited, shielded).
        *before_send* is awaited once, when the first try holds its send slot
        and its body is built, right before it leaves (where a journal writes
        its intent: as late as can be, so few intents are left uncertain).

        Raises:
            SubmissionUncertainError: The request went out and no clear answer
                came back; a billed job may exist.

        """
        model_id = request.model_id
        # Bodies are built just in time, and only as many as fit the budget.
        taken = await self._bodies.acquire(getattr(request, "body_size", 0))
        try:
            return await self._submit(request, model_id, on_retry, on_wire, before_send)
        finally:
            self._bodies.release(taken)

    async def _submit(
        self,
        request: Request,
        model_id: str,
        on_retry: Callable[[], None] | None,
        on_wire: Callable[[bool], None] | None,
        before_send: Callable[[], Awaitable[None]] | None,
    ) -> Submission:
        body = await request.encode()
        path = submit_path(model_id)
        first: list[Callable[[], Awaitable[None]] | None] = [before_send]

        async def once() -> Submission:
            hook, first[0] = first[0], None  # the first try only
            return await self._exchange(
                "submit",
                "POST",
                path,
                parse_submission,
                body=body,
                on_wire=on_wire,
                before_send=hook,
            )

        def retryable(error: Exception) -> bool:
            return _not_accepted(error) and _retryable(error)

        try:
            return await retrying(
                once,
                policy=self._retry,
                clock=self._clock,
                retryable=retryable,
                hint=_hint,
                on_retry=self._retry_hook("submit", path, None, on_retry),
                rand=self._rand,
            )
        except (APIError, TransportError) as error:
            if _not_accepted(error) or not _retryable(error):
                raise  # a clear "no": nothing was created
            raise SubmissionUncertainError(
                "the submit was sent but no clear answer came back, so a billed job "
                "may exist; it was not re-sent (RunComfy has no idempotency key)",
                model_id=model_id,
                status=error.status,
            ) from error

    async def status(
        self,
        request_id: str,
        *,
        on_retry: Callable[[], None] | None = None,
        deadline: float | None = None,
    ) -> Queued | Running | Completed | Failed | Cancelled:
        """Fetch a job's status (``Completed`` means: ask :meth:`result`)."""
        return await self._call(
            "status",
            "GET",
            status_path(request_id),
            lambda reply: parse_status(reply, request_id),
            request_id=request_id,
            on_retry=on_retry,
            deadline=deadline,
        )

    async def result(
        self,
        request_id: str,
        *,
        on_retry: Callable[[], None] | None = None,
        deadline: float | None = None,
    ) -> Queued | Running | Succeeded | Failed | Cancelled:
        """Fetch a job's outcome, or its current state if it is unfinished."""
        return await self._call(
            "result",
            "GET",
            result_path(request_id),
            lambda reply: parse_result(reply, request_id),
            params=RESULT_PARAMS,
            request_id=request_id,
            on_retry=on_retry,
            deadline=deadline,
        )

    async def cancel(
        self,
        request_id: str,
        *,
        on_retry: Callable[[], None] | None = None,
        deadline: float | None = None,
    ) -> CancelOutcome:
        """Ask the server to cancel a job; only a queued job can be cancelled."""
        return await self._call(
            "cancel",
            "POST",
            cancel_path(request_id),
            lambda reply: parse_cancel(reply, request_id),
            request_id=request_id,
            on_retry=on_retry,
            deadline=deadline,
        )

    def _retry_hook(
        self,
        kind: Kind,
        path: str,
        request_id: str | None,
        on_retry: Callable[[], None] | None,
    ) -> Callable[[int, float, Exception], None]:
        def hook(attempt: int, delay: float, error: Exception) -> None:
            self._monitor.retries += 1
            if on_retry is not None:
                on_retry()
            logger.info(
                "%s %s failed (%s); retry %d in %.2fs",
                kind,
                path,
                type(error).__name__,
                attempt,
                delay,
            )
            self._monitor.emit(RequestRetried(kind, attempt, delay, error, request_id))

        return hook

    async def _call(
        self,
        kind: Kind,
        method: str,
        path: str,
        parse: Callable[[Reply], T],
        *,
        params: Mapping[str, str] | None = None,
        request_id: str,
        on_retry: Callable[[], None] | None,
        deadline: float | None,
    ) -> T:
        async def once() -> T:
            try:
                return await self._exchange(kind, method, path, parse, params=params)
            except (APIError, TransportError) as error:
                if error.request_id is None:
                    error.request_id = request_id
                raise

        # The fast path: one try, no loop built. Most exchanges end here.
        try:
            return await once()
        except (APIError, TransportError) as error:
            if not _retryable(error):
                raise
            first: Exception = error

        return await retrying(
            once,
            policy=self._retry,
            clock=self._clock,
            retryable=_retryable,
            hint=_hint,
            on_retry=self._retry_hook(kind, path, request_id, on_retry),
            deadline=deadline,
            rand=self._rand,
            failed=first,
        )

    async def _exchange(
        self,
        kind: Kind,
        method: str,
        path: str,
        parse: Callable[[Reply], T],
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        on_wire: Callable[[bool], None] | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """Send once through the throttle, feed the answer back to it, parse it."""
        ticket = await self._admission.acquire(kind)
        try:
            if before_send is not None:
                await before_send()
            self._monitor.requests[kind] += 1
            if body is not None:  # a paid call: shield it while on the wire
                reply: Reply | None = None
                if on_wire is not None:
                    on_wire(True)  # noqa: FBT003 - a callback's one flag
                try:
                    with self.wire.shielded():
                        reply = await self._transport.request(
                            method, path, body=body, params=params
                        )
                finally:
                    if on_wire is not None:
                        on_wire(False)  # noqa: FBT003
                if reply is None:
                    raise TransportError(
                        f"{method} {path}: stopped waiting for the answer (the client closed)"
                    )
            else:
                reply = await self._transport.request(method, path, body=body, params=params)
        finally:
            self._admission.release(ticket)
        try:
            value = parse(reply)
        except RateLimitedError as exc:
            self._monitor.rate_limited += 1
            # The pause applies to every sender: cap it like the retry's own
            # wait, or one hostile hint would stall the whole client.
            hint = exc.retry_after
            if hint is not None:
                hint = min(hint, self._retry.max_retry_after)
            self._admission.on_rate_limited(ticket, hint)
            raise
        self._admission.on_success(ticket)
        return value
