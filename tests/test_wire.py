"""The wire layer, as pure functions of hand-built replies: no network."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from runcomfy_async import (
    APIError,
    AuthenticationError,
    Cancelled,
    CancelOutcome,
    Completed,
    Failed,
    InputRejectedError,
    InsufficientBalanceError,
    JobResult,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    Queued,
    RateLimitedError,
    Running,
    ServerError,
    Submission,
    Succeeded,
)
from runcomfy_async._wire import (
    RESULT_PARAMS,
    SNIPPET_CHARS,
    Reply,
    cancel_path,
    error_from,
    parse_cancel,
    parse_result,
    parse_status,
    parse_submission,
    result_path,
    status_path,
    submit_path,
)

RID = "3f1c2a9e-0000-4000-8000-000000000001"
VIDEO = "https://playgrounds-storage-public.runcomfy.net/out/a.mp4"
VIDEO2 = "https://cdn.runcomfy.com/out/b.mp4"
IMAGE = "https://playgrounds-storage-public.runcomfy.net/out/a.png"
IMAGE2 = "https://cdn.runcomfy.com/out/b.png"


def reply(body, status=200, headers=None):
    """Build a Reply from a JSON-able object, or raw bytes/str as they are."""
    if isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body).encode()
    return Reply(status, raw, headers or {})


def status_reply(word, **extra):
    return reply({"request_id": RID, "status": word, **extra})


def result_reply(word, **extra):
    return reply({"request_id": RID, "status": word, **extra})


# -- paths and requests ----------------------------------------------------------


def test_submit_path_keeps_model_slashes():
    """The model id's slashes stay path separators."""
    assert "/v1/models/bytedance/dreamina-3-0/pro/image-to-video" == submit_path(
        "bytedance/dreamina-3-0/pro/image-to-video"
    )


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(status_path, f"/v1/requests/{RID}/status", id="status"),
        pytest.param(result_path, f"/v1/requests/{RID}/result", id="result"),
        pytest.param(cancel_path, f"/v1/requests/{RID}/cancel", id="cancel"),
    ],
)
def test_request_paths(build, expected):
    """Each request endpoint has its documented path."""
    assert expected == build(RID)


def test_request_id_cannot_escape_its_path_segment():
    """A slash or query in a request id is quoted, not obeyed."""
    assert "/v1/requests/a%2F..%2Fb%3Fx%3D1/status" == status_path("a/../b?x=1")


def test_result_params_ask_for_the_cost():
    """Every result call asks for the cost."""
    assert {"include_cost": "true"} == RESULT_PARAMS


# -- submit ------------------------------------------------------------------------


def test_submission_200():
    """A 200 submit answer gives the id and the three URLs."""
    base = f"https://model-api.runcomfy.net/v1/requests/{RID}"
    body = {
        "request_id": RID,
        "status_url": f"{base}/status",
        "result_url": f"{base}/result",
        "cancel_url": f"{base}/cancel",
    }

    assert Submission(RID, f"{base}/status", f"{base}/result", f"{base}/cancel") == (
        parse_submission(reply(body))
    )


@pytest.mark.parametrize("word", ["in_queue", "IN_QUEUE"])
def test_submission_202_with_status(word):
    """A 202 with a status in the body is an accepted submit too."""
    assert Submission(RID) == parse_submission(reply({"request_id": RID, "status": word}, 202))


def test_submission_non_string_urls_are_ignored():
    """URL fields that are not strings are dropped, not passed on."""
    assert Submission(RID) == parse_submission(reply({"request_id": RID, "status_url": 5}))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>ok</html>", id="html"),
        pytest.param(b'{"request_id": "', id="truncated-json"),
        pytest.param({"message": "accepted"}, id="no-request-id"),
        pytest.param({"request_id": ""}, id="empty-request-id"),
        pytest.param({"request_id": 12}, id="numeric-request-id"),
        pytest.param([RID], id="json-list"),
        pytest.param({"request_id": "../../escaped"}, id="path-request-id"),
        pytest.param({"request_id": "/etc/passwd"}, id="absolute-request-id"),
        pytest.param({"request_id": "a b"}, id="spaced-request-id"),
        pytest.param(
            {"request_id": RID, "status_url": "https://h/v1/requests/other-job/status"},
            id="urls-name-another-job",
        ),
    ],
)
def test_submission_malformed_is_protocol_error(body):
    """A 2xx submit answer without a usable request id is a ProtocolError."""
    with pytest.raises(ProtocolError):
        parse_submission(reply(body))


def test_submission_error_code_in_200_body():
    """A 200 submit answer with an error_code is that error, not a job."""
    body = {"error_code": 400002, "error_message": "insufficient balance"}

    with pytest.raises(InsufficientBalanceError) as info:
        parse_submission(reply(body))

    assert (200, 400002) == (info.value.status, info.value.error_code)


# -- status ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        pytest.param("in_queue", Queued(None), id="in_queue"),
        pytest.param("in_progress", Running(), id="in_progress"),
        pytest.param("completed", Completed(), id="completed"),
        pytest.param("succeeded", Completed(), id="succeeded"),
        pytest.param("cancelled", Cancelled(), id="cancelled"),
        pytest.param("canceled", Cancelled(), id="canceled"),
        pytest.param("IN_QUEUE", Queued(None), id="upper-in_queue"),
        pytest.param("IN_PROGRESS", Running(), id="upper-in_progress"),
        pytest.param("COMPLETED", Completed(), id="upper-completed"),
        pytest.param("Succeeded", Completed(), id="title-succeeded"),
        pytest.param("CANCELED", Cancelled(), id="upper-canceled"),
        pytest.param(" in_progress ", Running(), id="padded"),
    ],
)
def test_status_words(word, expected):
    """Every status word and its drift maps to one status type."""
    assert expected == parse_status(status_reply(word), RID)


@pytest.mark.parametrize("word", ["failed", "FAILED"])
def test_status_failed(word):
    """``failed`` may appear on /status: it is a Failed, with the error if any."""
    error = {"message": "content policy violation", "code": "E_MODEL"}

    assert Failed(message="content policy violation", error=error) == parse_status(
        status_reply(word, error=error), RID
    )


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        pytest.param(3, 3, id="int"),
        pytest.param(0, 0, id="zero"),
        pytest.param(2.0, 2, id="integral-float"),
        pytest.param(-1, 0, id="negative-clamped"),
        pytest.param(2.5, None, id="fraction"),
        pytest.param("3", None, id="string"),
        pytest.param(True, None, id="bool"),
        pytest.param(None, None, id="null"),
    ],
)
def test_status_queue_position(position, expected):
    """queue_position is kept when it is a sane integer, dropped otherwise."""
    assert Queued(expected) == parse_status(status_reply("in_queue", queue_position=position), RID)


def test_status_queue_position_ignored_when_running():
    """A stray queue_position on a running job changes nothing."""
    assert Running() == parse_status(status_reply("in_progress", queue_position=4), RID)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param(
            {"request_id": RID, "status": "paused"}, "unknown status 'paused'", id="unknown"
        ),
        pytest.param({"request_id": RID}, "no status", id="missing"),
        pytest.param({"request_id": RID, "status": ""}, "no status", id="empty"),
        pytest.param({"request_id": RID, "status": 3}, "no status", id="number"),
        pytest.param(b"not json at all", "not a JSON object", id="not-json"),
        pytest.param(b"\xff\xfe\x00garbage", "not a JSON object", id="not-utf8"),
        pytest.param(["in_queue"], "not a JSON object", id="json-list"),
        pytest.param(b"", "not a JSON object", id="empty-body"),
    ],
)
def test_status_protocol_errors(body, match):
    """An answer without a known status word is a ProtocolError naming the job."""
    with pytest.raises(ProtocolError, match=match) as info:
        parse_status(reply(body), RID)

    assert (200, RID) == (info.value.status, info.value.request_id)


def test_status_error_code_in_200_body():
    """A 200 /status answer with an error_code raises that error."""
    body = {"error_code": 404001, "error_message": "request not found"}

    with pytest.raises(NotFoundError) as info:
        parse_status(reply(body), RID)

    assert (200, 404001, RID) == (
        info.value.status,
        info.value.error_code,
        info.value.request_id,
    )


def test_status_null_error_code_is_no_error():
    """``error_code: null`` in a 200 body is not an error."""
    assert Running() == parse_status(status_reply("in_progress", error_code=None), RID)


# -- result: states ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        pytest.param("in_queue", Queued(None), id="in_queue"),
        pytest.param("in_progress", Running(), id="in_progress"),
        pytest.param("cancelled", Cancelled(), id="cancelled"),
        pytest.param("canceled", Cancelled(), id="canceled"),
        pytest.param("IN_PROGRESS", Running(), id="upper-in_progress"),
        pytest.param("CANCELLED", Cancelled(), id="upper-cancelled"),
    ],
)
def test_result_unfinished_and_cancelled(word, expected):
    """/result of an unfinished or cancelled job answers its state."""
    assert expected == parse_result(result_reply(word), RID)


def test_result_queued_keeps_position():
    """A queued /result keeps its queue position."""
    assert Queued(2) == parse_result(result_reply("in_queue", queue_position=2), RID)


@pytest.mark.parametrize("status", [400, 200])
def test_result_not_ready_400005_is_running(status):
    """error_code 400005 on /result means "not finished yet", as a 400 or a 200."""
    body = {"error_code": 400005, "error_message": "the request has not finished yet"}

    assert Running() == parse_result(reply(body, status), RID)


def test_result_400005_elsewhere_is_an_error():
    """400005 means "not ready" on /result only; on /status it is an error."""
    with pytest.raises(APIError):
        parse_status(reply({"error_code": 400005}, 400), RID)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param("NSFW content", "NSFW content", id="string"),
        pytest.param({"message": "policy"}, "policy", id="object-message"),
        pytest.param({"error_message": "oom"}, "oom", id="object-error_message"),
        pytest.param({"detail": "timeout"}, "timeout", id="object-detail"),
        pytest.param({"code": "E1"}, '{"code": "E1"}', id="object-without-message"),
        pytest.param(None, "the job failed (the server gave no reason)", id="null"),
        pytest.param("", "the job failed (the server gave no reason)", id="empty-string"),
    ],
)
def test_result_failed(error, message):
    """A failed /result keeps the opaque error and a readable message."""
    assert Failed(message=message, error=error) == parse_result(
        result_reply("failed", error=error), RID
    )


def test_result_failed_message_of_huge_error_is_cut():
    """An unreadable error object is cut to a snippet for the message."""
    error = {"code": "x" * 5000}

    failed = parse_result(result_reply("FAILED", error=error), RID)

    assert isinstance(failed, Failed)
    assert SNIPPET_CHARS == len(failed.message)
    assert error == failed.error


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param({"request_id": RID, "status": "done"}, "unknown status 'done'", id="unknown"),
        pytest.param({"request_id": RID}, "no status", id="missing"),
        pytest.param(b"<html>200 OK</html>", "not a JSON object", id="not-json"),
    ],
)
def test_result_protocol_errors(body, match):
    """A /result answer without a known status word is a ProtocolError."""
    with pytest.raises(ProtocolError, match=match):
        parse_result(reply(body), RID)


# -- result: outputs ---------------------------------------------------------------


def succeeded(**fields):
    state = parse_result(result_reply("succeeded", **fields), RID)
    assert isinstance(state, Succeeded)
    return state.result


@pytest.mark.parametrize("word", ["succeeded", "completed", "SUCCEEDED", "Completed"])
def test_result_success_words(word):
    """``succeeded`` and ``completed`` both mean success on /result."""
    state = parse_result(result_reply(word, output={"video": VIDEO}), RID)

    assert isinstance(state, Succeeded)
    assert (VIDEO, (VIDEO,)) == (state.result.video_url, state.result.urls)


@pytest.mark.parametrize(
    ("output", "videos", "images"),
    [
        pytest.param({"video": VIDEO}, (VIDEO,), (), id="video"),
        pytest.param({"videos": [VIDEO, VIDEO2]}, (VIDEO, VIDEO2), (), id="videos"),
        pytest.param(
            {"video": VIDEO, "videos": [VIDEO, VIDEO2]}, (VIDEO, VIDEO2), (), id="both-dedup"
        ),
        pytest.param({"video": {"url": VIDEO}}, (VIDEO,), (), id="video-object"),
        pytest.param({"image": IMAGE}, (), (IMAGE,), id="image"),
        pytest.param({"images": [IMAGE, IMAGE2]}, (), (IMAGE, IMAGE2), id="images"),
        pytest.param(
            {"video": VIDEO, "images": [IMAGE]}, (VIDEO,), (IMAGE,), id="video-and-images"
        ),
        pytest.param({}, (), (), id="empty"),
        pytest.param({"video": "not a url"}, (), (), id="not-a-url"),
    ],
)
def test_result_output_urls(output, videos, images):
    """Videos and images are found under their singular and plural keys."""
    result = succeeded(output=output)

    assert (videos, images) == (result.video_urls, result.image_urls)
    assert (videos[0] if videos else None) == result.video_url
    assert output == result.output


def test_result_exposes_every_url():
    """``urls`` holds every URL anywhere in the output, in order, once each."""
    thumb = "https://cdn.runcomfy.net/out/thumb.jpg"
    output = {
        "video": VIDEO,
        "extras": {"thumbnails": [{"url": thumb}, {"url": VIDEO}]},
        "images": [IMAGE],
        "caption": "a cat",
        "fps": 24,
    }

    assert (VIDEO, thumb, IMAGE) == succeeded(output=output).urls


@pytest.mark.parametrize("output", [None, "https://x.test/a.mp4", [VIDEO]])
def test_result_output_not_an_object(output):
    """An output that is not an object gives an empty result, not a crash."""
    result = succeeded(output=output)

    assert ((), {}) == (result.urls, result.output)


def test_result_metadata():
    """Model id, timestamps, cost and run time are read from the result."""
    result = succeeded(
        output={"video": VIDEO},
        model_id="bytedance/dreamina-3-0/pro/image-to-video",
        created_at="2025-06-01T10:00:00.250000+00:00",
        finished_at="2025-06-01T10:01:30.750000+00:00",
        cost=0.45,
    )

    assert (
        JobResult(
            request_id=RID,
            video_urls=(VIDEO,),
            urls=(VIDEO,),
            output={"video": VIDEO},
            model_id="bytedance/dreamina-3-0/pro/image-to-video",
            created_at=datetime(2025, 6, 1, 10, 0, 0, 250000, tzinfo=timezone.utc),
            finished_at=datetime(2025, 6, 1, 10, 1, 30, 750000, tzinfo=timezone.utc),
            cost=0.45,
        )
        == result
    )
    assert 90.5 == result.run_seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "2025-06-01T10:00:00.123456+00:00",
            datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=timezone.utc),
            id="micro-utc",
        ),
        pytest.param(
            "2025-06-01T10:00:00.123456Z",
            datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=timezone.utc),
            id="micro-Z",
        ),
        pytest.param(
            "2025-06-01T10:00:00Z",
            datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc),
            id="Z",
        ),
        pytest.param(
            "2025-06-01T15:30:00.000001+05:30",
            datetime(2025, 6, 1, 15, 30, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            id="positive-offset",
        ),
        pytest.param(
            "2025-06-01T02:00:00.500000-08:00",
            datetime(2025, 6, 1, 2, 0, 0, 500000, tzinfo=timezone(timedelta(hours=-8))),
            id="negative-offset",
        ),
        pytest.param(
            "2025-06-01T10:00:00.123456",
            datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=timezone.utc),
            id="naive-is-utc",
        ),
        pytest.param("yesterday", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param(1717236000, None, id="number"),
        pytest.param(None, None, id="null"),
    ],
)
def test_result_timestamps(text, expected):
    """ISO-8601 timestamps with microseconds and offsets (``Z`` too) are read."""
    result = succeeded(created_at=text)

    assert expected == result.created_at


def test_timestamps_in_different_offsets_give_run_seconds():
    """Run time is right across offsets (``Z`` and ``+02:00``)."""
    result = succeeded(
        created_at="2025-06-01T10:00:00.000000Z",
        finished_at="2025-06-01T12:00:42.500000+02:00",
    )

    assert 42.5 == result.run_seconds


def test_run_seconds_mixing_naive_and_aware():
    """A naive timestamp is taken as UTC, so run time still comes out."""
    result = succeeded(
        created_at="2025-06-01T10:00:00", finished_at="2025-06-01T10:00:05.000000+00:00"
    )

    assert 5.0 == result.run_seconds


@pytest.mark.parametrize(
    ("created", "finished"),
    [
        pytest.param("2025-06-01T10:00:00Z", None, id="unfinished"),
        pytest.param(None, "2025-06-01T10:00:00Z", id="no-created"),
        pytest.param("2025-06-01T10:00:05Z", "2025-06-01T10:00:00Z", id="negative"),
    ],
)
def test_run_seconds_unknown(created, finished):
    """Without both timestamps, or with them backwards, run time is unknown."""
    assert None is succeeded(created_at=created, finished_at=finished).run_seconds


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        pytest.param(0.45, 0.45, id="float"),
        pytest.param(1, 1.0, id="int"),
        pytest.param(0, 0.0, id="zero"),
        pytest.param(True, None, id="bool"),
        pytest.param("0.45", None, id="string"),
        pytest.param(None, None, id="null"),
    ],
)
def test_result_cost(cost, expected):
    """The cost is a float when the server sent a number."""
    assert expected == succeeded(cost=cost).cost


def test_result_request_id_falls_back_to_the_asked_one():
    """A result body without request_id still names the job."""
    state = parse_result(reply({"status": "succeeded", "output": {"video": VIDEO}}), RID)

    assert isinstance(state, Succeeded)
    assert RID == state.result.request_id


def test_result_model_id_must_be_a_string():
    """A non-string model_id is dropped."""
    assert None is succeeded(model_id=42).model_id


# -- cancel ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"request_id": RID, "status": "cancelled", "outcome": "cancelled"},
            CancelOutcome(request_id=RID, cancelled=True, status="cancelled", outcome="cancelled"),
            id="queued-cancelled",
        ),
        pytest.param(
            {"request_id": RID, "status": "canceled", "outcome": "canceled"},
            CancelOutcome(request_id=RID, cancelled=True, status="cancelled", outcome="canceled"),
            id="canceled-spelling",
        ),
        pytest.param(
            {"request_id": RID, "status": "CANCELLED", "outcome": "CANCELLED"},
            CancelOutcome(request_id=RID, cancelled=True, status="cancelled", outcome="CANCELLED"),
            id="upper-case",
        ),
        pytest.param(
            {"request_id": RID, "status": "cancelled"},
            CancelOutcome(request_id=RID, cancelled=True, status="cancelled", outcome=None),
            id="status-only",
        ),
        pytest.param(
            {"request_id": RID, "status": "in_progress", "outcome": "not_cancellable"},
            CancelOutcome(
                request_id=RID, cancelled=False, status="in_progress", outcome="not_cancellable"
            ),
            id="running-not-cancellable",
        ),
        pytest.param(
            {"request_id": RID, "status": "completed", "outcome": "not_cancellable"},
            CancelOutcome(
                request_id=RID, cancelled=False, status="completed", outcome="not_cancellable"
            ),
            id="finished-not-cancellable",
        ),
        pytest.param(
            {"status": "IN_PROGRESS"},
            CancelOutcome(request_id=RID, cancelled=False, status="in_progress", outcome=None),
            id="no-request-id-no-outcome",
        ),
    ],
)
def test_cancel_outcomes(body, expected):
    """A cancel is effective only if the outcome or status says cancelled."""
    assert expected == parse_cancel(reply(body, 202), RID)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"Accepted", id="not-json"),
        pytest.param({"message": "accepted"}, id="no-status-no-outcome"),
        pytest.param({"request_id": RID, "status": "", "outcome": None}, id="empty-words"),
    ],
)
def test_cancel_unreadable_is_protocol_error(body):
    """A cancel answer without a status or outcome is a ProtocolError, not "not cancelled"."""
    with pytest.raises(ProtocolError):
        parse_cancel(reply(body, 202), RID)


def test_cancel_unknown_job():
    """Cancelling an unknown job is a NotFoundError naming it."""
    with pytest.raises(NotFoundError) as info:
        parse_cancel(reply({"error_code": 404001, "error_message": "not found"}, 404), RID)

    assert RID == info.value.request_id


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        pytest.param(401, None, AuthenticationError, id="401"),
        pytest.param(401, 401001, AuthenticationError, id="401-401001"),
        pytest.param(400, 400004, AuthenticationError, id="400-400004"),
        pytest.param(401, 400004, AuthenticationError, id="401-400004"),
        pytest.param(402, None, InsufficientBalanceError, id="402"),
        pytest.param(402, 400002, InsufficientBalanceError, id="402-400002"),
        pytest.param(400, 400002, InsufficientBalanceError, id="400-400002"),
        pytest.param(403, None, PermissionDeniedError, id="403"),
        pytest.param(403, 403001, PermissionDeniedError, id="403-403001"),
        pytest.param(404, None, NotFoundError, id="404"),
        pytest.param(404, 404001, NotFoundError, id="404-404001"),
        pytest.param(404, 400001, ModelNotFoundError, id="404-400001"),
        pytest.param(400, 400001, ModelNotFoundError, id="400-400001"),
        pytest.param(422, None, InputRejectedError, id="422"),
        pytest.param(422, 422001, InputRejectedError, id="422-422001"),
        pytest.param(400, 422001, InputRejectedError, id="400-422001"),
        pytest.param(429, None, RateLimitedError, id="429"),
        pytest.param(500, None, ServerError, id="500"),
        pytest.param(500, 500001, ServerError, id="500-500001"),
        pytest.param(502, None, ServerError, id="502"),
        pytest.param(503, None, ServerError, id="503"),
        pytest.param(200, 500001, ServerError, id="200-500001"),
        pytest.param(200, 401001, AuthenticationError, id="200-401001"),
        pytest.param(200, 400002, InsufficientBalanceError, id="200-400002"),
        pytest.param(200, 400001, ModelNotFoundError, id="200-400001"),
        pytest.param(200, 422001, InputRejectedError, id="200-422001"),
        pytest.param(400, None, APIError, id="400-plain"),
        pytest.param(418, None, APIError, id="418"),
        pytest.param(400, 999999, APIError, id="400-unknown-5xxxxx-code"),
        pytest.param(400, 499999, APIError, id="400-unknown-code"),
        pytest.param(200, 599999, ServerError, id="200-unknown-5xxxxx-code"),
        pytest.param(200, 499999, APIError, id="200-unknown-code"),
    ],
)
def test_error_mapping(status, code, cls):
    """Each status and error_code maps to its error class, the code first."""
    body = {"error_code": code, "error_message": "boom", "detail": None}

    error = error_from(reply(body, status), request_id=RID)

    assert cls is type(error)
    assert (status, code, "boom", RID) == (
        error.status,
        error.error_code,
        error.message,
        error.request_id,
    )


def test_error_code_as_string():
    """A six-digit error_code sent as a string is still recognised."""
    error = error_from(reply({"error_code": "401001"}, 200))

    assert isinstance(error, AuthenticationError)
    assert 401001 == error.error_code


@pytest.mark.parametrize(
    "status",
    [200, 201, 202, 204],
)
def test_success_is_no_error(status):
    """A 2xx without error_code is no error."""
    assert None is error_from(reply({"request_id": RID}, status))


def test_validation_error_keeps_detail():
    """A 422001 keeps the server's field list in ``detail``."""
    detail = [
        {"loc": ["body", "prompt"], "msg": "field required", "type": "missing"},
        {"loc": ["body", "frames"], "msg": "frames must be one of 121 or 241", "type": "literal"},
    ]
    body = {"error_code": 422001, "error_message": "input does not match", "detail": detail}

    error = error_from(reply(body, 422))

    assert isinstance(error, InputRejectedError)
    assert detail == error.detail


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"error_message": "a", "message": "b"}, "a", id="error_message"),
        pytest.param({"message": "b", "error": "c"}, "b", id="message"),
        pytest.param({"error": "c"}, "c", id="error"),
        pytest.param({"detail": "d"}, "HTTP 400", id="none"),
    ],
)
def test_error_message_sources(body, message):
    """The message comes from error_message, then message, then error."""
    error = error_from(reply(body, 400))

    assert error is not None
    assert message == error.message


def test_html_502_keeps_a_short_snippet():
    """An HTML gateway page becomes a ServerError with a short, flat snippet."""
    page = (
        "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>"
        + "<p>cloudflare</p>\n" * 500
        + "</body></html>"
    )

    error = error_from(reply(page, 502, {"Content-Type": "text/html"}))

    assert isinstance(error, ServerError)
    assert error.message.startswith("<html> <head><title>502 Bad Gateway</title></head>")
    assert len(error.message) <= SNIPPET_CHARS + 3
    assert "\n" not in error.message
    assert (502, None) == (error.status, error.error_code)


def test_empty_error_body():
    """An error without a body says its HTTP status."""
    error = error_from(reply(b"", 503))

    assert isinstance(error, ServerError)
    assert "HTTP 503" == error.message


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "7"}, 7.0, id="seconds"),
        pytest.param({"retry-after": "0.25"}, 0.25, id="lower-case-fraction"),
        pytest.param({"RETRY-AFTER": "3"}, 3.0, id="upper-case-name"),
        pytest.param({"Retry-After": "-5"}, 0.0, id="negative"),
        pytest.param({"Retry-After": "soon"}, None, id="garbage"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_rate_limited_retry_after_seconds(headers, expected):
    """A 429 carries its Retry-After hint in seconds."""
    error = error_from(reply({"error_code": None, "error_message": "slow down"}, 429, headers))

    assert isinstance(error, RateLimitedError)
    assert expected == error.retry_after


def test_rate_limited_retry_after_http_date():
    """A Retry-After HTTP date becomes the seconds until then."""
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=30)

    error = error_from(
        reply(b"Too Many Requests", 429, {"Retry-After": format_datetime(when, usegmt=True)})
    )

    assert isinstance(error, RateLimitedError)
    assert error.retry_after is not None
    assert 28.0 <= error.retry_after <= 30.0
    assert "Too Many Requests" == error.message


def test_reply_repr_hides_headers():
    """A Reply's repr leaves its headers out."""
    assert "headers" not in repr(Reply(200, b"{}", {"X": "y"}))
