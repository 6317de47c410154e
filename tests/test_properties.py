"""Properties, with Hypothesis: hostile input ends in a result or one of our typed errors.

Request construction, the wire parsers, local image checks and the batch
reader each face input nobody would write on purpose (any JSON, any bytes,
any text, any number). Each either succeeds, with a result that keeps its
promises, or raises the typed error its caller handles; never a KeyError,
TypeError, RecursionError or a hang.

The examples run under the ``"properties"`` profile: few enough to keep the
module at a few seconds, no deadline (a loaded machine is not a bug), no
example database written into the working tree. Set
``RUNCOMFY_PROPERTY_EXAMPLES`` to run more. Defects the properties found
(twelve, all fixed) are kept as ``@example``s, so they stay fixed.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import math
import os
import string
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runcomfy_async import (
    APIError,
    Cancelled,
    CancelOutcome,
    Completed,
    Failed,
    ImageToVideo,
    ModelRequest,
    ProtocolError,
    Queued,
    RateLimitedError,
    Running,
    Submission,
    Succeeded,
    ValidationError,
)
from runcomfy_async._images import ImageInfo, validate_data_uri, validate_image_bytes
from runcomfy_async._wire import (
    RESULT_NOT_READY,
    Reply,
    error_from,
    parse_cancel,
    parse_result,
    parse_status,
    parse_submission,
)
from runcomfy_async.cli._batch import check, read_batch
from runcomfy_async.testing import sample_jpeg, sample_png

settings.register_profile(
    "properties",
    max_examples=int(os.environ.get("RUNCOMFY_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    database=None,
    # One failure at a time: an xfail below names the exception it expects.
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)
PROPERTIES = settings.get_profile("properties")

RID = "req-0001"
"""The job every parsed answer is about."""

# -- strategies ---------------------------------------------------------------

# Any JSON scalar Python's json module writes, NaN and infinities included
# (json.dumps writes them, json.loads reads them back).
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)
finite_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)
# Anything a caller might pass where a field is expected.
any_value = st.recursive(
    json_scalars | st.binary(max_size=10) | st.just(()),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3)
    ),
    max_leaves=6,
)

SMALL_PNG = sample_png(400, 300)
SMALL_JPEG = sample_jpeg(400, 300)


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """*data* cut short, with bits flipped, with bytes added, or as it is."""
    cut = draw(st.integers(0, len(data)))
    flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)), max_size=3))
    mutable = bytearray(data)
    for at, bit in flips:
        mutable[at] ^= 1 << bit
    end = draw(st.sampled_from([cut, len(data)]))
    return bytes(mutable[:end]) + draw(st.binary(max_size=8))


def image_bytes() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, real images of random sizes, and damaged real images."""
    sides = st.integers(1, 900)
    real = st.builds(sample_png, sides, sides) | st.builds(sample_jpeg, sides, sides)
    return st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8"]).flatmap(
            lambda head: st.binary(max_size=64).map(lambda rest: head + rest)
        ),
        real,
        damaged(SMALL_PNG),
        damaged(SMALL_JPEG),
    )


def data_uris() -> st.SearchStrategy[str]:
    """``data:`` URIs: good and bad types, good and bad base64, any bytes in them."""
    mime = st.sampled_from(["image/png", "image/jpeg", "image/jpg", "IMAGE/PNG", "image/gif", ""])
    payload = image_bytes().map(lambda data: base64.b64encode(data).decode())
    payload |= st.text(alphabet=string.ascii_letters + "+/=-_ %", max_size=40)
    params = st.sampled_from([";base64", ";charset=utf-8;base64", "", ";base64;base64"])
    return st.builds(lambda m, p, b: f"data:{m}{p},{b}", mime, params, payload)


def urls() -> st.SearchStrategy[str]:
    """Strings shaped like URLs, with every part drawn from odd choices."""
    scheme = st.sampled_from(["https", "http", "HTTPS", "ftp", "file", "c", ""])
    host = st.sampled_from(
        ["example.com", "127.0.0.1", "localhost", "[::1]", "[", "]", "", "a b", "127.evil.example"]
    ) | st.text(max_size=12)
    path = st.text(max_size=12)
    ext = st.sampled_from([".png", ".jpg", ".JPEG", ".gif", ".webp", "", ".png?x=1", ".png#f"])
    return st.builds(lambda s, h, p, e: f"{s}://{h}/{p}{e}", scheme, host, path, ext)


image_refs = urls() | data_uris() | st.text(max_size=40) | any_value
prompts = st.text(max_size=40) | st.text(min_size=790, max_size=810) | any_value
seeds = st.integers() | st.sampled_from([-1, 0, 2**32 - 1, 2**32, -2]) | any_value
frame_values = st.sampled_from([121, 241, 121.0, True, "121"]) | st.integers() | any_value


def _image_to_video_fields() -> st.SearchStrategy[dict[str, Any]]:
    valid = st.fixed_dictionaries(
        {
            "prompt": st.text(min_size=1, max_size=50).filter(str.strip),
            "image_url": st.just("https://example.com/cat.png"),
            "seed": st.integers(-1, 2**32 - 1),
            "frames": st.sampled_from([121, 241]),
        }
    )
    anything = st.fixed_dictionaries(
        {"prompt": prompts},
        optional={"image_url": image_refs, "seed": seeds, "frames": frame_values},
    )
    return valid | anything


def _outcome(call: Callable[[], object], expected: type[Exception]) -> object:
    """Return what *call* returns, or the *expected* error it raises (anything else escapes)."""
    try:
        return call()
    except expected as exc:
        return exc


# -- (1) requests --------------------------------------------------------------


def _strict_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _check_built(request: ImageToVideo | ModelRequest) -> None:
    first, second = request.fingerprint(), request.fingerprint()
    assert _strict_json(first) == _strict_json(second)
    body = asyncio.run(request.encode())
    assert isinstance(body, dict)
    json.dumps(body)  # a dict of plain JSON, or sending it would fail
    assert request.model_id == first["model_id"]


@PROPERTIES
@example({"prompt": "a cat", "image_url": "https://[/cat.png"})
@example({"prompt": "a cat", "image_url": "https://example.com]/cat.png"})
@given(_image_to_video_fields())
def test_image_to_video_builds_or_raises_validation_error(fields):
    try:
        request = ImageToVideo(**fields)
    except ValidationError:
        return
    _check_built(request)
    fingerprint = request.fingerprint()
    # Images are described by source and hash: no data URI's base64 is kept.
    image = fingerprint["image"]
    if image["kind"] == "data_uri":
        assert set(image) == {"kind", "mime", "sha256", "size"}
    else:
        assert image == {"kind": "url", "url": fields["image_url"]}


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return {"deep": value}


model_ids = (
    st.from_regex(r"[a-z0-9][a-z0-9._-]{0,6}(/[a-z0-9][a-z0-9._-]{0,6}){1,3}", fullmatch=True)
    | st.text(max_size=20)
    | any_value
)
payloads = st.dictionaries(st.text(max_size=8), json_values | any_value, max_size=4) | any_value
scales = st.floats() | st.integers() | any_value


@PROPERTIES
@given(model_ids, payloads, scales)
def test_model_request_builds_or_raises_validation_error(model_id, payload, scale):
    try:
        request = ModelRequest(model_id, payload, run_time_scale=scale)
    except ValidationError:
        return
    _check_built(request)
    # The body is the payload as sent, as plain JSON.
    body = asyncio.run(request.encode())
    assert json.dumps(body, sort_keys=True) == json.dumps(payload, sort_keys=True)


def test_a_payload_nested_too_deep_is_a_validation_error():
    # Not an @example: Hypothesis's own printer cannot show a value this deep.
    with pytest.raises(ValidationError):
        ModelRequest("owner/model", _nested(5000))


@PROPERTIES
@given(st.dictionaries(st.text(max_size=6), finite_json_values, max_size=5))
def test_model_request_fingerprint_ignores_key_order(payload):
    reordered = dict(reversed(list(payload.items())))
    first = ModelRequest("owner/model", payload).fingerprint()
    second = ModelRequest("owner/model", reordered).fingerprint()
    assert _strict_json(first) == _strict_json(second)


# -- (2) the wire --------------------------------------------------------------

STATUS_WORDS = [
    "in_queue",
    "in_progress",
    "completed",
    "succeeded",
    "failed",
    "cancelled",
    "canceled",
    " Completed ",
    "IN_QUEUE",
    "not_cancellable",
    "paused",
    "",
]
wire_fields: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from(STATUS_WORDS) | json_values,
    "request_id": st.sampled_from([RID, "req-other", "", RID.upper()]) | json_values,
    "error_code": st.sampled_from(
        [RESULT_NOT_READY, 400004, 500001, "400005", " 422001 ", "\u00b2"]
    )
    | json_values,
    "error_message": json_values,
    "error": json_values,
    "detail": json_values,
    "queue_position": st.integers() | json_values,
    "output": st.fixed_dictionaries(
        {}, optional={"video": json_values | urls(), "videos": st.lists(urls(), max_size=3)}
    )
    | json_values,
    "cost": st.floats() | st.integers() | json_values,
    "created_at": st.datetimes().map(datetime.isoformat) | json_values,
    "finished_at": st.sampled_from(["2025-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59"])
    | json_values,
    "outcome": st.sampled_from(["cancelled", "not_cancellable", "CANCELED"]) | json_values,
    "model_id": json_values,
    "status_url": json_values,
}
wire_objects = st.fixed_dictionaries({}, optional=wire_fields) | st.dictionaries(
    st.text(max_size=8), json_values, max_size=3
)
bodies = st.one_of(
    st.binary(max_size=60),
    (wire_objects | json_values).map(lambda v: json.dumps(v).encode()),
    st.text(max_size=40).map(str.encode),
)
statuses = st.sampled_from([200, 202, 400, 401, 404, 422, 429, 500, 502]) | st.integers(100, 599)
retry_after = st.one_of(
    st.text(max_size=20),
    st.floats().map(str),
    st.integers().map(str),
    st.datetimes(timezones=st.just(timezone.utc)).map(format_datetime),
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after", "RETRY-AFTER", "Content-Type"]),
    retry_after,
    max_size=2,
)
replies = st.builds(Reply, statuses, bodies, headers)

# Bodies the properties found to break a parser.
DEEP_JSON = Reply(200, b"[" * 5_000)
DIGIT_LOOKALIKE_CODE = Reply(200, json.dumps({"error_code": "\u00b2"}).encode())
HUGE_COST = Reply(
    200, b'{"status": "completed", "request_id": "req-0001", "cost": 1' + b"0" * 400 + b"}"
)
INFINITE_COST = Reply(200, b'{"status": "completed", "request_id": "req-0001", "cost": Infinity}')


def _about_another_job(reply: Reply) -> bool:
    try:
        data = json.loads(reply.body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("request_id") not in {None, RID}


def _body_was_an_error(reply: Reply) -> bool:
    try:
        data = json.loads(reply.body)
    except (ValueError, RecursionError):
        data = None
    code = data.get("error_code") if isinstance(data, dict) else None
    return not 200 <= reply.status < 300 or code is not None


def _check_parsed(outcome: object) -> None:
    """What a parser returns keeps its types' promises."""
    if isinstance(outcome, Queued):
        assert outcome.position is None or (
            isinstance(outcome.position, int) and outcome.position >= 0
        )
    elif isinstance(outcome, Failed):
        assert isinstance(outcome.message, str)
        assert outcome.message
    elif isinstance(outcome, Succeeded):
        result = outcome.result
        assert result.request_id == RID
        for url in (*result.video_urls, *result.image_urls, *result.urls):
            assert isinstance(url, str)
            assert url.startswith(("https://", "http://"))
        assert result.cost is None or math.isfinite(result.cost)
        # The results file writes it: it must at least serialise.
        json.dumps(result.to_json())
    elif isinstance(outcome, CancelOutcome):
        assert outcome.request_id == RID
        assert isinstance(outcome.cancelled, bool)
        assert isinstance(outcome.status, str)


PARSERS: dict[str, tuple[Callable[[Reply], object], tuple[type, ...]]] = {
    "status": (
        lambda reply: parse_status(reply, RID),
        (Queued, Running, Completed, Failed, Cancelled),
    ),
    "result": (
        lambda reply: parse_result(reply, RID),
        (Queued, Running, Succeeded, Failed, Cancelled),
    ),
    "cancel": (lambda reply: parse_cancel(reply, RID), (CancelOutcome,)),
}


@PROPERTIES
@example(DEEP_JSON, "status")
@example(DIGIT_LOOKALIKE_CODE, "cancel")
@example(HUGE_COST, "result")
@example(INFINITE_COST, "result")
@given(replies, st.sampled_from(sorted(PARSERS)))
def test_job_parsers_return_a_state_or_raise_an_api_error(reply, which):
    parse, types = PARSERS[which]
    outcome = _outcome(lambda: parse(reply), APIError)
    if isinstance(outcome, APIError):
        assert outcome.request_id == RID
        if isinstance(outcome, RateLimitedError):
            wait = outcome.retry_after
            assert wait is None or (math.isfinite(wait) and wait >= 0)
        return
    assert isinstance(outcome, types)
    _check_parsed(outcome)
    # An answer about another job is never taken for this one's.
    assert not _about_another_job(reply) or _body_was_an_error(reply)


@PROPERTIES
@given(
    st.sampled_from([200, 201, 202, 299]),
    st.fixed_dictionaries(
        {"status": st.sampled_from(STATUS_WORDS) | json_scalars},
        optional={"outcome": wire_fields["outcome"], "cost": st.floats(), "error": json_scalars},
    ),
    st.sampled_from(sorted(PARSERS)),
)
def test_an_answer_about_another_job_is_a_protocol_error(status, data, which):
    data = {**data, "request_id": "req-other"}
    data.pop("error_code", None)
    parse, _ = PARSERS[which]
    with pytest.raises(ProtocolError, match="another job"):
        parse(Reply(status, json.dumps(data).encode()))


@PROPERTIES
@example(DEEP_JSON)
@example(DIGIT_LOOKALIKE_CODE)
@given(replies)
def test_submission_parser_returns_a_receipt_or_raises_an_api_error(reply):
    try:
        receipt = parse_submission(reply)
    except APIError:
        return
    assert isinstance(receipt, Submission)
    assert isinstance(receipt.request_id, str)
    assert receipt.request_id
    for url in (receipt.status_url, receipt.result_url, receipt.cancel_url):
        assert url is None or isinstance(url, str)


@PROPERTIES
@example(DEEP_JSON)
@example(DIGIT_LOOKALIKE_CODE)
@given(replies)
def test_error_from_returns_an_api_error_or_none(reply):
    error = error_from(reply, request_id=RID)
    assert error is None or isinstance(error, APIError)
    if error is None:
        assert 200 <= reply.status < 300
    else:
        assert error.status == reply.status
        assert isinstance(str(error), str)


# -- (3) local images ----------------------------------------------------------


@PROPERTIES
@given(image_bytes())
def test_image_bytes_validate_or_raise_validation_error(data):
    info = _outcome(lambda: validate_image_bytes(data), ValidationError)
    if isinstance(info, ValidationError):
        assert info.field == "image_url"
        assert info.rule in {"type", "size", "dimensions", "ratio", "corrupt"}
        return
    assert isinstance(info, ImageInfo)
    assert info.size == len(data)


@PROPERTIES
@given(st.sampled_from([SMALL_PNG, SMALL_JPEG]), st.data())
def test_no_strict_prefix_of_an_image_is_accepted(image, data):
    cut = data.draw(st.integers(0, len(image) - 1))
    with pytest.raises(ValidationError):
        validate_image_bytes(image[:cut])


@PROPERTIES
@given(data_uris() | st.text(max_size=40))
def test_data_uris_validate_or_raise_validation_error(uri):
    try:
        info = validate_data_uri(uri)
    except ValidationError:
        return
    assert info.mime in {"image/png", "image/jpeg"}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder the examples share (Hypothesis reruns a test, not its fixtures)."""
    return tmp_path_factory.mktemp("properties")


@PROPERTIES
@given(image_bytes())
def test_from_file_builds_or_raises_validation_error(scratch, data):
    path = scratch / "image.bin"
    path.write_bytes(data)
    try:
        request = ImageToVideo.from_file(path, prompt="a cat")
    except ValidationError:
        return
    _check_built(request)
    assert request.fingerprint()["image"]["size"] == len(data)


# -- (4) the batch reader --------------------------------------------------------

FIELD_NAMES = ["key", "prompt", "image", "image_url", "seed", "frames"]
# What a JSON line can hold: JSON values only, odd image references included.
batch_values = st.one_of(
    st.text(max_size=40),
    st.text(min_size=790, max_size=810),
    urls(),
    data_uris(),
    st.integers(),
    json_values,
    st.sampled_from(["~nosuchuser/cat.png", "cat\x00.png", "x" * 300 + ".png", "https://[/a.png"]),
)
batch_objects = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=6), batch_values, max_size=6
)
jsonl_lines = st.one_of(
    batch_objects.map(json.dumps),
    batch_objects.map(lambda o: json.dumps(o, ensure_ascii=False)),
    json_values.map(json.dumps),
    st.text(max_size=30),
)
# Text a file can hold in UTF-8 (no lone surrogates).
file_text = st.characters(blacklist_categories=("Cs",))


def _read_and_check(folder: Path, name: str, text: str) -> tuple[list[Any], list[tuple[int, str]]]:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    lines, errors = read_batch(path, seed=-1, frames=121)
    specs, problems = check(lines)
    return specs, errors + problems


def _check_batch_outcome(specs: list[Any], errors: list[tuple[int, str]]) -> None:
    assert specs or errors
    for number, message in errors:
        assert isinstance(number, int)
        assert number >= 0
        assert isinstance(message, str)


@PROPERTIES
@example(['{"prompt": "a cat", "image": "~nosuchuser/cat.png"}'])
@example(['{"prompt": "a cat", "image": "cat\\u0000.png"}'])
@example(['{"prompt": "a cat", "image": "' + "x" * 300 + '.png"}'])
@example(['{"prompt": "a cat", "image": "https://[/a.png"}'])
@example(['{"seed": ' + "9" * 5000 + "}"])
@example(["[" * 5_000])
@given(st.lists(jsonl_lines, max_size=6))
def test_jsonl_batch_returns_jobs_or_line_numbered_errors(scratch, lines):
    specs, errors = _read_and_check(scratch, "jobs.jsonl", "\n".join(lines))
    _check_batch_outcome(specs, errors)
    text = "\n".join(lines)
    # However the reader counts lines, a number names one of them.
    most = max(len(text.split("\n")), len(text.splitlines()))
    assert all(number <= most for number, _ in errors)


good_jobs = st.builds(
    lambda prompt, seed, frames: {
        "prompt": prompt,
        "image_url": "https://example.com/cat.png",
        "seed": seed,
        "frames": frames,
    },
    st.text(file_text, min_size=1, max_size=30).filter(lambda p: p.strip()),
    st.integers(-1, 2**32 - 1),
    st.sampled_from([121, 241]),
)
bad_jobs = st.one_of(
    st.builds(
        lambda s: {"prompt": "a", "image_url": "https://e.com/a.png", "seed": s},
        st.integers(max_value=-2),
    ),
    st.builds(
        lambda f: {"prompt": "a", "image_url": "https://e.com/a.png", "frames": f},
        st.integers().filter(lambda f: f not in {121, 241}),
    ),
    st.just({"prompt": " ", "image_url": "https://e.com/a.png"}),
    st.just({"prompt": "a", "image_url": "https://e.com/a.gif"}),
    st.just({"prompt": "a"}),
    st.just({"prompt": "a", "image_url": "https://e.com/a.png", "colour": "red"}),
    st.just(["not", "an", "object"]),
)


@PROPERTIES
@example(
    [
        (
            True,
            {
                "prompt": "a\u2028b",
                "image_url": "https://example.com/cat.png",
                "seed": 1,
                "frames": 121,
            },
        )
    ]
)
@given(
    st.lists(
        st.tuples(st.just(True), good_jobs) | st.tuples(st.just(False), bad_jobs),
        min_size=1,
        max_size=8,
    )
)
def test_jsonl_batch_reports_every_bad_line_at_once(scratch, jobs):
    text = "\n".join(
        json.dumps(job, ensure_ascii=False) if good else json.dumps(job) for good, job in jobs
    )
    specs, errors = _read_and_check(scratch, "jobs.jsonl", text)
    good_lines = [n for n, (good, _) in enumerate(jobs, start=1) if good]
    bad_lines = {n for n, (good, _) in enumerate(jobs, start=1) if not good}
    assert bad_lines == {number for number, _ in errors}
    assert [spec.where.rpartition(":")[2] for spec in specs] == [str(n) for n in good_lines]
    # What was written is what was read.
    assert [spec.prompt for spec in specs] == [job["prompt"] for good, job in jobs if good]


csv_texts = st.lists(
    st.text(file_text, max_size=6) | st.sampled_from([",", '"', "\n", "\r\n", *FIELD_NAMES]),
    max_size=20,
).map("".join)


@PROPERTIES
@example("prompt,image_url\n" + "x" * 140_000 + ",https://example.com/cat.png\n")
@given(csv_texts)
def test_csv_batch_returns_jobs_or_line_numbered_errors(scratch, text):
    specs, errors = _read_and_check(scratch, "jobs.csv", text)
    _check_batch_outcome(specs, errors)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["prompt", "image_url", "seed", "frames"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@PROPERTIES
@example(
    [
        {
            "prompt": "line one\nline two",
            "image_url": "https://example.com/cat.png",
            "seed": 1,
            "frames": 121,
        }
    ]
)
@given(st.lists(good_jobs, min_size=1, max_size=5))
def test_csv_batch_reads_back_what_csv_writes(scratch, rows):
    specs, errors = _read_and_check(scratch, "jobs.csv", _csv_text(rows))
    assert not errors
    assert [spec.prompt for spec in specs] == [row["prompt"] for row in rows]
    assert [(spec.seed, spec.frames) for spec in specs] == [(r["seed"], r["frames"]) for r in rows]
