"""Every error this library raises, in one tree.

::

    RunComfyError                       base of everything raised here
    ├── ValidationError (ValueError)    bad input, raised before any network call
    ├── ClientClosedError (RuntimeError) the client was used outside ``async with``
    ├── MissingTokenError               no API token was given or found; nothing was sent
    ├── APIError                        the server answered with an error
    │   ├── AuthenticationError         401 / 400004 / 401001: token missing or revoked
    │   ├── InsufficientBalanceError    402 / 400002: top up the account
    │   ├── PermissionDeniedError       403 / 403001: request id of another account
    │   ├── NotFoundError               404 / 404001: unknown or expired request id
    │   │   └── ModelNotFoundError      400001: unknown or malformed model id
    │   ├── InputRejectedError          422 / 422001: the server's schema check failed
    │   ├── RateLimitedError            429, after the retries ran out
    │   ├── ServerError                 5xx / 500001, after the retries ran out
    │   └── ProtocolError               an answer this library cannot understand
    ├── TransportError                  no usable answer (connection, timeout)
    │   ├── ConnectError                the request provably never left this host
    │   │   └── APIUnreachableError     the API host cannot be reached: no job is sent
    │   └── RequestTimeoutError (TimeoutError)
    ├── SubmissionUncertainError        a paid submit may or may not have created a job
    ├── DownloadError                   an output file could not be fetched
    │   └── DownloadTimeoutError (TimeoutError) its deadline passed
    ├── JournalError                    the journal could not record a paid call; no more are sent
    └── JobError                        one job ended without a result
        ├── JobFailedError              the model run failed on the server
        ├── JobCancelledError           the job was cancelled (here or remotely)
        ├── JobRunningOnError           the client stopped following a running (billed) job
        └── JobTimeoutError (TimeoutError) the job's deadline passed

Every error carries ``status`` (HTTP status), ``error_code`` (RunComfy's six
digit code), ``message`` and ``request_id`` where they are known. None of them
ever holds the API token: messages are built from server bodies (cut to a few
hundred characters) and from our own text, never from request headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import CancelOutcome


class RunComfyError(Exception):
    """Base class of every error raised by :mod:`runcomfy_async`.

    Attributes:
        message: What went wrong, in words.
        status: The HTTP status of the answer, if there was one.
        error_code: RunComfy's six-digit ``error_code``, if the body had one.
        request_id: The job's request id, if the error concerns one job.
        detail: The server's ``detail`` field (validation errors list fields).

    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: int | None = None,
        request_id: str | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.request_id = request_id
        self.detail = detail

    def __str__(self) -> str:
        parts = [self.message]
        facts = []
        if self.status is not None:
            facts.append(f"HTTP {self.status}")
        if self.error_code is not None:
            facts.append(f"error_code {self.error_code}")
        if self.request_id is not None:
            facts.append(f"request {self.request_id}")
        if facts:
            parts.append(f"({', '.join(facts)})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ValidationError(RunComfyError, ValueError):
    """Input broke a rule of the model's schema; nothing was sent.

    Attributes:
        field: The request field at fault (``"prompt"``, ``"image_url"`` ...).
        rule: A short name for the rule (``"max_length"``, ``"one_of"`` ...).

    """

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.rule = rule


class ClientClosedError(RunComfyError, RuntimeError):
    """The client is not open: use it inside ``async with`` and only once."""


class MissingTokenError(RunComfyError):
    """No API token was given or found in the environment; no server was asked."""


class APIError(RunComfyError):
    """The server answered, and the answer was an error."""


class AuthenticationError(APIError):
    """The token is missing, expired or revoked, or the account is inactive."""


class InsufficientBalanceError(APIError):
    """The account's balance does not cover the request."""


class PermissionDeniedError(APIError):
    """The request id belongs to another account."""


class NotFoundError(APIError):
    """The request id is unknown, deleted or expired."""


class ModelNotFoundError(NotFoundError):
    """The model id is unknown or malformed."""


class InputRejectedError(APIError):
    """The server's schema check rejected the input; ``detail`` lists fields."""


class RateLimitedError(APIError):
    """The server kept answering 429 after every retry.

    Attributes:
        retry_after: The server's last ``Retry-After`` hint, in seconds.

    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(APIError):
    """The server failed (5xx) after every retry."""


class ProtocolError(APIError):
    """The server's answer does not fit the API contract.

    Attributes:
        retryable: False when asking again cannot help (a well-formed answer
            with a status word this library does not know); True for answers
            that look broken in transit (a cut or garbled body).

    """

    def __init__(self, message: str, *, retryable: bool = True, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retryable = retryable


class TransportError(RunComfyError):
    """No usable answer arrived: the connection failed or timed out.

    Attributes:
        sent: False only when the request provably never reached the server
            (connection refused, DNS failure, connect timeout).

    """

    def __init__(self, message: str, *, sent: bool = True, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.sent = sent


class ConnectError(TransportError):
    """The connection could not be made; the request never left this host."""

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, sent=False, **kw)


class APIUnreachableError(ConnectError):
    """The API host could not be reached at all, so no job was (or will be) sent.

    Raised for the first submit that found the host unreachable after its
    retries, and for every job that was waiting behind it: a client stops
    sending once it knows the API is out of reach, rather than failing one
    job at a time.
    """


class RequestTimeoutError(TransportError, TimeoutError):
    """The server did not answer in time; the request may have been processed."""


class SubmissionUncertainError(RunComfyError):
    """A paid submit may have created a billed job, and it was not re-sent.

    The request left this host but no answer came back (the connection
    dropped, the read timed out, or a gateway answered 5xx). RunComfy has no
    idempotency key, so re-sending could pay twice. Check your account's
    request history before trying again. ``__cause__`` holds the fault.

    Attributes:
        model_id: The model the submit was for.

    """

    def __init__(self, message: str, *, model_id: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.model_id = model_id


class DownloadError(RunComfyError):
    """An output file could not be fetched (host not allowed, HTTP error, retries spent)."""


class DownloadTimeoutError(DownloadError, TimeoutError):
    """A download did not finish within its deadline (retries included)."""


class JournalError(RunComfyError):
    """The journal failed to record a paid call, or could not be opened.

    Recording failed: the client stopped sending; jobs already accepted are
    still followed, and none is submitted without its record. Opening failed:
    the journal is in use by another process, was written by a newer version,
    or is not a journal at all. ``__cause__`` (or the message) names the
    store's own error.
    """


class JobError(RunComfyError):
    """A job ended without a result."""


class JobFailedError(JobError):
    """The model run failed on the server.

    Attributes:
        error: The server's opaque ``error`` value (a string or an object).

    """

    def __init__(self, message: str, *, error: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.error = error


class JobCancelledError(JobError):
    """The job was cancelled, by this client or elsewhere."""


class JobRunningOnError(JobError):
    """The client stopped following this job while it ran on the server.

    A running job cannot be cancelled, so it runs on and is billed; its result
    can still be collected by re-attaching its ``request_id``
    (:meth:`RunComfy.attach`, or ``runcomfy-async wait``).
    """


class JobTimeoutError(JobError, TimeoutError):
    """The job's deadline passed before it finished.

    Attributes:
        cancel: What the remote cancel said: ``cancel.cancelled`` is False when
            the job was already running (``not_cancellable``: it runs on and is
            billed); None when no remote cancel was possible (never submitted).

    """

    def __init__(self, message: str, *, cancel: CancelOutcome | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.cancel = cancel
