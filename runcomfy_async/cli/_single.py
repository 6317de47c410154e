"""Single calls: ``status``, ``result``, ``cancel`` and ``wait``, for one or more request ids.

Each prints one JSON object a request id on stdout. Their words match the
batch's: a finished job is ``succeeded`` or ``failed`` on every command
(``/status`` alone says ``completed`` for both, so ``status`` asks
``/result`` once to tell which).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from runcomfy_async import (
    Cancelled,
    CancelOutcome,
    Completed,
    Failed,
    Job,
    JobStatus,
    Outcome,
    Pending,
    Queued,
    RunComfy,
    RunComfyError,
    Running,
    Succeeded,
)

from ._base import EXIT_FAILED, EXIT_OK, plural
from ._report import Reporter
from ._results import error_text, status_word

_FINISHED = frozenset({"completed", "succeeded", "failed", "cancelled", "canceled"})


def _print(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def state_json(request_id: str, state: JobStatus) -> dict[str, Any]:
    """Return a job's state in the batch's words, as one JSON object."""
    answer: dict[str, Any] = {"request_id": request_id}
    match state:
        case Queued(position=position):
            answer.update(status="queued", queue_position=position)
        case Running():
            answer.update(status="running")
        case Completed():
            # Only when /result itself still says "completed" (drift).
            answer.update(status="completed")
        case Succeeded(result=result):
            answer.update(status="succeeded", **result.to_json())
        case Failed(message=message, error=error):
            answer.update(status="failed", message=message, error=error)
        case Cancelled():
            answer.update(status="cancelled")
        case Pending():  # pragma: no cover - the server never reports this
            answer.update(status="pending")
    answer["request_id"] = request_id
    return answer


def cancel_json(outcome: CancelOutcome) -> dict[str, Any]:
    """Return a cancel's answer as one JSON object."""
    return {
        "request_id": outcome.request_id,
        "cancelled": outcome.cancelled,
        "status": outcome.status,
        "outcome": outcome.outcome,
    }


def cancel_message(outcome: CancelOutcome) -> str | None:
    """Say what a cancel that did not cancel means for the bill."""
    if outcome.cancelled:
        return None
    status = outcome.status.lower()
    if status in _FINISHED:
        return (
            f"{outcome.request_id} has already finished (status {outcome.status}): "
            "there was nothing to cancel"
        )
    return (
        f"{outcome.request_id} is {outcome.status}: a running job cannot be cancelled; "
        "it runs on and is billed"
    )


async def _one(client: RunComfy, command: str, request_id: str, reporter: Reporter) -> bool:
    """Make one call and print its answer; return False if it failed."""
    try:
        await _call(client, command, request_id, reporter)
    except RunComfyError as exc:
        reporter.error(f"{request_id}: {error_text(exc, request_id)}")
        return False
    return True


async def _call(client: RunComfy, command: str, request_id: str, reporter: Reporter) -> None:
    if command == "status":
        state: JobStatus = await client.api.status(request_id)
        if isinstance(state, Completed):
            # /status says "completed" for failed jobs too: ask which.
            state = await client.api.result(request_id)
            if isinstance(state, Succeeded):
                _print({"request_id": request_id, "status": "succeeded"})
                return
        _print(state_json(request_id, state))
    elif command == "result":
        _print(state_json(request_id, await client.api.result(request_id)))
    else:
        outcome = await client.api.cancel(request_id)
        message = cancel_message(outcome)
        if message is not None:
            reporter.warn(message)
        _print(cancel_json(outcome))


async def single_calls(
    command: str,
    request_ids: Sequence[str],
    *,
    token: str | None,
    base_url: str | None,
    reporter: Reporter,
) -> int:
    """Run ``status``, ``result`` or ``cancel`` for each id; return the exit code."""
    code = EXIT_OK
    async with RunComfy(token, base_url=base_url) as client:
        for request_id in request_ids:
            if not await _one(client, command, request_id, reporter):
                code = EXIT_FAILED
    return code


def _wait_json(job: Job) -> dict[str, Any]:
    error = job.exception()
    answer: dict[str, Any] = {
        "request_id": job.request_id,
        "status": status_word(job),
        "billed": job.billed,
    }
    if error is None:
        answer.update(job.result().to_json())
    else:
        answer["error"] = error_text(error, job.request_id)
    answer["request_id"] = job.request_id
    return answer


async def wait(
    request_ids: Sequence[str],
    *,
    token: str | None,
    base_url: str | None,
    reporter: Reporter,
) -> int:
    """Re-attach each id and print its outcome as it comes; return the exit code.

    Stopping early (Ctrl-C) closes the client as ``run`` does: jobs still
    queued are cancelled (not billed); running ones run on (billed).
    """
    async with RunComfy(token, base_url=base_url, hooks=[reporter.hook]) as client:
        jobs = [client.attach(request_id) for request_id in request_ids]
        reporter.say(f"waiting for {plural(len(jobs), 'job')}")
        ok = True
        async for job in client.as_completed(jobs):
            _print(_wait_json(job))
            ok = ok and job.outcome is Outcome.SUCCEEDED
    return EXIT_OK if ok else EXIT_FAILED
