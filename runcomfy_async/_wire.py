"""The wire format: paths, bodies, and every drift the server is known for.

This is the only module that knows the server's field names. It turns our
requests into JSON and the server's answers (a status, headers and raw bytes)
into the closed set of types in :mod:`._models`, or into one of the errors of
:mod:`._errors`. It does no I/O, so every quirk is tested without a network.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Final
from urllib.parse import quote

import attrs

from ._errors import (
    APIError,
    AuthenticationError,
    InputRejectedError,
    InsufficientBalanceError,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    ServerError,
)
from ._models import (
    Cancelled,
    CancelOutcome,
    Completed,
    Failed,
    JobResult,
    Queued,
    Running,
    Submission,
    Succeeded,
)
from ._retry import parse_retry_after

API_PREFIX: Final = "/v1"
SNIPPET_CHARS: Final = 300
"""How much of a non-JSON body (an HTML 502 page, say) an error keeps."""

RESULT_NOT_READY: Final = 400005

# What a request id may look like (RunComfy's are UUIDs): no slashes, no dots
# run together, nothing a path or a file name could be tricked by.
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_:-]{0,127}")

# Drift the contract lists: both words of each pair mean the same thing.
_SUCCESS = frozenset({"completed", "succeeded"})
_CANCELLED = frozenset({"cancelled", "canceled"})
_QUEUED = frozenset({"in_queue"})
_RUNNING = frozenset({"in_progress"})
_FAILED = frozenset({"failed"})

# error_code -> error class; the HTTP status is the fallback.
_BY_CODE: Final[Mapping[int, type[APIError]]] = {
    400004: AuthenticationError,
    401001: AuthenticationError,
    400002: InsufficientBalanceError,
    403001: PermissionDeniedError,
    404001: NotFoundError,
    400001: ModelNotFoundError,
    422001: InputRejectedError,
    500001: ServerError,
}
_BY_STATUS: Final[Mapping[int, type[APIError]]] = {
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: InputRejectedError,
    429: RateLimitedError,
}


def _unchanged(text: str) -> str:
    return text


@attrs.frozen
class Reply:
    """One HTTP answer, as the transport hands it over.

    *redact* masks secrets in text built from the body for an error message;
    the body itself is parsed as it came.
    """

    status: int
    body: bytes
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    redact: Callable[[str], str] = attrs.field(default=_unchanged, repr=False, eq=False)


# -- paths -------------------------------------------------------------------


def submit_path(model_id: str) -> str:
    """``POST`` here to submit; model ids keep their slashes."""
    return f"{API_PREFIX}/models/{quote(model_id, safe='/')}"


def status_path(request_id: str) -> str:
    """``GET`` here for a job's status."""
    return f"{API_PREFIX}/requests/{quote(request_id, safe='')}/status"


def result_path(request_id: str) -> str:
    """``GET`` here for a job's result (or its current state)."""
    return f"{API_PREFIX}/requests/{quote(request_id, safe='')}/result"


def cancel_path(request_id: str) -> str:
    """``POST`` here to cancel a queued job."""
    return f"{API_PREFIX}/requests/{quote(request_id, safe='')}/cancel"


RESULT_PARAMS: Final = {"include_cost": "true"}
"""Query of every result call: the cost comes at no extra request."""


# -- answers -----------------------------------------------------------------


def _snippet(reply: Reply) -> str:
    """Return the start of a body for an error message: whitespace folded, secrets masked."""
    text = reply.body.decode("utf-8", errors="replace").strip()
    # Masked before it is cut, so that a cut cannot split a secret in two.
    text = reply.redact(" ".join(text.split()))
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "..."


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a body nested deeper than the interpreter's limit.
        return _NOT_JSON


_NOT_JSON: Final = object()
_UNDECODED: Final = object()


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # isdigit() is also true for "²", which int() refuses: ASCII digits only.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None


def error_from(
    reply: Reply, *, request_id: str | None = None, data: Any = _UNDECODED
) -> APIError | None:
    """Return the error an answer stands for, or None if it is a success.

    An error is a non-2xx status, or any status with a non-null
    ``error_code`` in its body (some endpoints answer 200 with an error).
    *data* is the body already decoded, if the caller has it.
    """
    if data is _UNDECODED:
        data = _decode(reply.body)
    code = _code(data.get("error_code")) if isinstance(data, dict) else None
    has_code = isinstance(data, dict) and data.get("error_code") is not None
    if 200 <= reply.status < 300 and not has_code:
        return None
    if isinstance(data, dict):
        message = data.get("error_message") or data.get("message") or data.get("error")
        message = reply.redact(str(message)) if message else f"HTTP {reply.status}"
        detail = data.get("detail")
    else:
        message = _snippet(reply) or f"HTTP {reply.status}"
        detail = None
    cls: type[APIError]
    if code is not None and code in _BY_CODE:
        cls = _BY_CODE[code]
    elif reply.status in _BY_STATUS:
        cls = _BY_STATUS[reply.status]
    elif reply.status >= 500 or (reply.status < 400 and code is not None and code >= 500000):
        # A 4xx status says the request was refused, whatever its code says.
        cls = ServerError
    else:
        cls = APIError
    kw: dict[str, Any] = {
        "status": reply.status,
        "error_code": code,
        "request_id": request_id,
        "detail": detail,
    }
    if cls is RateLimitedError:
        return RateLimitedError(
            message, retry_after=parse_retry_after(_header(reply, "Retry-After")), **kw
        )
    return cls(message, **kw)


def _header(reply: Reply, name: str) -> str | None:
    value = reply.headers.get(name)
    if value is not None:
        return value
    lname = name.lower()
    for key, val in reply.headers.items():
        if key.lower() == lname:
            return val
    return None


def _checked(
    reply: Reply, what: str, request_id: str | None, data: Any = _UNDECODED
) -> dict[str, Any]:
    """Decode an answer once; raise the error it stands for, or return its object."""
    if data is _UNDECODED:
        data = _decode(reply.body)
    error = error_from(reply, request_id=request_id, data=data)
    if error is not None:
        raise error
    if not isinstance(data, dict):
        raise ProtocolError(
            f"{what} answer is not a JSON object: {_snippet(reply)!r}",
            status=reply.status,
            request_id=request_id,
        )
    if request_id is not None:
        # An answer about another job must not be taken for this one's (its
        # id would name files, and a poll's outcome would land on the wrong job).
        answered = data.get("request_id")
        if answered is not None and answered != request_id:
            raise ProtocolError(
                f"{what} answer is about another job: request_id "
                f"{reply.redact(repr(answered)[:SNIPPET_CHARS])}",
                status=reply.status,
                request_id=request_id,
            )
    return data


def _state_word(data: Mapping[str, Any], what: str, reply: Reply, rid: str | None) -> str:
    raw = data.get("status")
    if not isinstance(raw, str) or not raw.strip():
        raise ProtocolError(
            f"{what} answer has no status: {_snippet(reply)!r}",
            status=reply.status,
            request_id=rid,
        )
    return raw.strip().lower()


def _unknown_state(word: str, what: str, reply: Reply, rid: str | None) -> ProtocolError:
    # A well-formed answer with a word we do not know will not change by
    # asking again: report it at once, with the body that carried it.
    return ProtocolError(
        f"{what} answer has an unknown status {word!r}: {_snippet(reply)!r}",
        status=reply.status,
        request_id=rid,
        retryable=False,
    )


def _position(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value.is_integer():
        return max(0, int(value))
    return None


def parse_submission(reply: Reply) -> Submission:
    """Read a submit's answer (200 or 202, with or without ``status``)."""
    data = _checked(reply, "submit", None)
    rid = data.get("request_id")
    if not isinstance(rid, str) or not rid:
        raise ProtocolError(
            f"submit answer has no request_id: {_snippet(reply)!r}", status=reply.status
        )

    def url(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    submission = Submission(rid, url("status_url"), url("result_url"), url("cancel_url"))
    # The client has no id of its own to compare a submit's answer with, so
    # it checks what it can: the id's form, and that the answer's own URLs
    # name the same job. An answer that fails is not understood, and a paid
    # submit that is not understood is uncertain (a job may exist).
    named = [u for u in (submission.status_url, submission.result_url) if u is not None]
    if not _REQUEST_ID.fullmatch(rid) or any(f"/{quote(rid, safe='')}/" not in u for u in named):
        raise ProtocolError(
            f"submit answer names an unusable or inconsistent request_id: {_snippet(reply)!r}",
            status=reply.status,
        )
    return submission


def _failure(data: Mapping[str, Any]) -> Failed:
    error = data.get("error")
    if isinstance(error, str) and error:
        message = error
    elif isinstance(error, Mapping):
        inner = error.get("message") or error.get("error_message") or error.get("detail")
        message = str(inner) if inner else json.dumps(error)[:SNIPPET_CHARS]
    else:
        message = "the job failed (the server gave no reason)"
    return Failed(message=message, error=error)


def parse_status(
    reply: Reply, request_id: str
) -> Queued | Running | Completed | Failed | Cancelled:
    """Read ``/status``: ``completed`` (or ``succeeded``) means "finished, see ``/result``"."""
    data = _checked(reply, "status", request_id)
    word = _state_word(data, "status", reply, request_id)
    if word in _QUEUED:
        return Queued(_position(data.get("queue_position")))
    if word in _RUNNING:
        return Running()
    if word in _SUCCESS:
        return Completed()
    if word in _FAILED:
        return _failure(data)
    if word in _CANCELLED:
        return Cancelled()
    raise _unknown_state(word, "status", reply, request_id)


def parse_result(
    reply: Reply, request_id: str
) -> Queued | Running | Succeeded | Failed | Cancelled:
    """Read ``/result``: a finished job's outcome, or an unfinished job's state."""
    decoded = _decode(reply.body)
    if (
        (reply.status == 400 or 200 <= reply.status < 300)
        and isinstance(decoded, dict)
        and _code(decoded.get("error_code")) == RESULT_NOT_READY
    ):
        # Drift: "not ready yet" as an error (a 400, or a 200 with the code).
        # The job exists and is not finished; whether it is queued or running
        # is not said.
        return Running()
    data = _checked(reply, "result", request_id, decoded)
    word = _state_word(data, "result", reply, request_id)
    if word in _QUEUED:
        return Queued(_position(data.get("queue_position")))
    if word in _RUNNING:
        return Running()
    if word in _SUCCESS:
        return Succeeded(_job_result(data, request_id))
    if word in _FAILED:
        return _failure(data)
    if word in _CANCELLED:
        return Cancelled()
    raise _unknown_state(word, "result", reply, request_id)


def parse_cancel(reply: Reply, request_id: str) -> CancelOutcome:
    """Read a cancel's answer; only ``cancelled`` means the job will not run."""
    data = _checked(reply, "cancel", request_id)
    status = data.get("status")
    status_word = status.strip().lower() if isinstance(status, str) else ""
    outcome = data.get("outcome")
    outcome_word = outcome.strip().lower() if isinstance(outcome, str) else None
    if not status_word and not outcome_word:
        # Neither word: this is no cancel answer (a broken body), and reading
        # it as "not cancelled" would misreport a cancel that took effect.
        raise ProtocolError(
            f"cancel answer has no status or outcome: {_snippet(reply)!r}",
            status=reply.status,
            request_id=request_id,
        )
    cancelled = outcome_word in _CANCELLED or status_word in _CANCELLED
    return CancelOutcome(
        request_id=request_id,
        cancelled=cancelled,
        status="cancelled" if status_word in _CANCELLED else status_word,
        outcome=outcome if isinstance(outcome, str) else None,
    )


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # A timestamp without an offset is taken as UTC, so that two of them can
    # always be subtracted (run_seconds) even if only one has an offset.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _urls(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value.startswith(("https://", "http://")):
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _urls(item)
    elif isinstance(value, list):
        for item in value:
            yield from _urls(item)


def _named_urls(output: Mapping[str, Any], one: str, many: str) -> tuple[str, ...]:
    found = [*_urls(output.get(one)), *_urls(output.get(many))]
    return tuple(dict.fromkeys(found))


def _job_result(data: Mapping[str, Any], request_id: str) -> JobResult:
    output = data.get("output")
    if not isinstance(output, Mapping):
        output = {}
    cost = data.get("cost")
    model_id = data.get("model_id")
    return JobResult(
        request_id=request_id,
        video_urls=_named_urls(output, "video", "videos"),
        image_urls=_named_urls(output, "image", "images"),
        urls=tuple(dict.fromkeys(_urls(output))),
        output=output,
        model_id=model_id if isinstance(model_id, str) else None,
        created_at=_timestamp(data.get("created_at")),
        finished_at=_timestamp(data.get("finished_at")),
        cost=_cost(cost),
    )


def _cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        cost = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return cost if math.isfinite(cost) else None
