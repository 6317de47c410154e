"""The four API calls, each one exchange plus the retries that are safe.

What may be repeated is decided in one place, :meth:`API._call`:

============================  ===================  ============================
fault                         status/result/cancel submit (paid, no idempotency)
============================  ===================  ============================
connection never made         retry                retry (provably not sent)
dropped or timed out          retry                SubmissionUncertainError
429                           retry (Retry-After)  retry (not accepted)
503                           retry                retry (not accepted)
other 5xx, malformed answer   retry                SubmissionUncertainError
other 4xx                     raise                raise
============================  ===================  ============================
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anyio

from ._backoff import retry_delay
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
    ImageToVideo,
    ModelRequest,
    Queued,
    Running,
    Submission,
    Succeeded,
)
from ._ratelimit import Throttle
from ._transport import Transport
from ._wire import (
    RESULT_PARAMS,
    Reply,
    cancel_path,
    encode_request,
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


def _not_accepted(error: Exception) -> bool:
    """Say whether a failed submit provably created no job."""
    if isinstance(error, TransportError):
        return not error.sent
    if isinstance(error, RateLimitedError):
        return True
    return isinstance(error, ServerError) and error.status == 503


class API:
    """Single calls with safe retries, shared by the scheduler and by users."""

    def __init__(
        self,
        transport: Transport,
        throttle: Throttle,
        retry: RetryPolicy,
        monitor: Monitor,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._transport = transport
        self._throttle = throttle
        self._retry = retry
        self._monitor = monitor
        self._rand = rand

    def __repr__(self) -> str:
        return f"<API {self._transport.base_url}>"

    async def submit(
        self, request: ImageToVideo | ModelRequest, *, on_retry: Callable[[], None] | None = None
    ) -> Submission:
        """Submit one job (paid). Never re-sent unless provably not accepted.

        Raises:
            SubmissionUncertainError: The request went out and no clear answer
                came back; a billed job may exist.

        """
        model_id, body = encode_request(request)
        return await self._call(
            "submit",
            "POST",
            submit_path(model_id),
            parse_submission,
            body=body,
            paid_model=model_id,
            on_retry=on_retry,
        )

    async def status(
        self, request_id: str, *, on_retry: Callable[[], None] | None = None
    ) -> Queued | Running | Completed | Failed | Cancelled:
        """Fetch a job's status (``Completed`` means: ask :meth:`result`)."""
        return await self._call(
            "status",
            "GET",
            status_path(request_id),
            lambda reply: parse_status(reply, request_id),
            request_id=request_id,
            on_retry=on_retry,
        )

    async def result(
        self, request_id: str, *, on_retry: Callable[[], None] | None = None
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
        )

    async def cancel(
        self, request_id: str, *, on_retry: Callable[[], None] | None = None
    ) -> CancelOutcome:
        """Ask the server to cancel a job; only a queued job can be cancelled."""
        return await self._call(
            "cancel",
            "POST",
            cancel_path(request_id),
            lambda reply: parse_cancel(reply, request_id),
            request_id=request_id,
            on_retry=on_retry,
        )

    async def _call(
        self,
        kind: str,
        method: str,
        path: str,
        parse: Callable[[Reply], T],
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        request_id: str | None = None,
        paid_model: str | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._exchange(kind, method, path, parse, body=body, params=params)
            except (APIError, TransportError) as exc:
                error = exc
            if error.request_id is None:
                error.request_id = request_id
            self._raise_unless_retryable(error, attempt, paid_model)
            retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
            delay = retry_delay(attempt, self._retry, retry_after, self._rand)
            self._monitor.retries += 1
            if on_retry is not None:
                on_retry()
            logger.info(
                "%s %s failed (%s); retry %d in %.2fs",
                method,
                path,
                type(error).__name__,
                attempt,
                delay,
            )
            self._monitor.emit(RequestRetried(kind, attempt, delay, error, request_id))
            await anyio.sleep(delay)

    async def _exchange(
        self,
        kind: str,
        method: str,
        path: str,
        parse: Callable[[Reply], T],
        *,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
    ) -> T:
        """Send once through the throttle, feed the answer back to it, parse it."""
        ticket = await self._throttle.acquire()
        try:
            self._monitor.requests[kind] += 1
            reply = await self._transport.request(method, path, body=body, params=params)
        finally:
            self._throttle.release()
        try:
            value = parse(reply)
        except RateLimitedError as exc:
            self._monitor.rate_limited += 1
            # The pause applies to every sender: cap it like the retry's own
            # wait, or one hostile hint would stall the whole client.
            hint = exc.retry_after
            if hint is not None:
                hint = min(hint, self._retry.max_retry_after)
            self._throttle.on_rate_limited(ticket, hint)
            raise
        self._throttle.on_success(ticket)
        return value

    def _raise_unless_retryable(
        self, error: APIError | TransportError, attempt: int, paid_model: str | None
    ) -> None:
        if paid_model is not None and not _not_accepted(error):
            if not isinstance(error, _RETRYABLE):
                raise error  # a clear 4xx: nothing was created
            raise SubmissionUncertainError(
                "the submit was sent but no clear answer came back, so a billed job "
                "may exist; it was not re-sent (RunComfy has no idempotency key)",
                model_id=paid_model,
                status=error.status,
            ) from error
        if not isinstance(error, _RETRYABLE) or attempt >= self._retry.attempts:
            raise error
