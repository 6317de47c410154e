"""The token stays in one header to one host: never in a repr, a log, a pickle."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle

import pytest
from _security_helpers import (
    OTHER_TOKEN,
    TOKEN,
    assert_nothing_shows,
    assert_token_absent,
    exception_chain,
    raw_http_server,
)
from aiohttp import web
from conftest import fast_retry_policy

from runcomfy_async import (
    ConnectError,
    FixedInterval,
    ImageToVideo,
    InputRejectedError,
    JobResult,
    Limits,
    ModelRequest,
    NotFoundError,
    ProtocolError,
    RunComfy,
    RunComfyError,
    SubmissionUncertainError,
    Succeeded,
    TransportError,
)
from runcomfy_async._config import Secret
from runcomfy_async._wire import Reply, parse_cancel, parse_result, parse_status
from runcomfy_async.testing import FakeRunComfy, Faults, Fixed, ManualClock

GENERIC = "acme/generic/text-to-video"
SEED = "bytedance/dreamina-3-0/pro/image-to-video"
API_KINDS = frozenset({"submit", "status", "result", "cancel"})


@contextlib.asynccontextmanager
async def opened(base_url, token=TOKEN, **options):
    settings = {
        "retry": fast_retry_policy(),
        "limits": Limits(initial_rate=1000.0, burst=100.0),
        "polling": FixedInterval(interval=0.002),
        **options,
    }
    async with RunComfy(token, base_url=base_url, **settings) as client:
        yield client


def pickled(value):
    """What pickling writes, even if it fails halfway."""
    buffer = io.BytesIO()
    with contextlib.suppress(Exception):
        pickle.Pickler(buffer).dump(value)
    return buffer.getvalue()


async def collect_everything(base_url, image_url):
    """Run jobs and provoke errors; return every object a user could print."""
    seen = []
    async with opened(base_url) as client:
        seen += [client, client._transport, client.api, client._transport._token]
        jobs = client.submit_many(
            [
                ModelRequest(GENERIC, {"prompt": "a cat"}),
                ImageToVideo(prompt="a dog", image_url=image_url),
            ]
        )
        outcomes = await client.gather(jobs)
        seen += [*jobs, *outcomes, client.stats]
        for outcome in outcomes:
            if not isinstance(outcome, RunComfyError):
                seen += [outcome.output, outcome.video_url]
        submission = await client.api.submit(ModelRequest(GENERIC, {"prompt": "x"}))
        seen += [submission, await client.api.status(submission.request_id)]
        seen.append(await client.api.cancel(submission.request_id))
        with pytest.raises(NotFoundError) as not_found:
            await client.api.status("no-such-job")
        with pytest.raises(InputRejectedError) as rejected:
            await client.api.submit(ModelRequest(SEED, {}))
        seen += [not_found.value, rejected.value]
    return seen


# -- reprs, messages, tracebacks, pickles ------------------------------------------------


async def test_token_in_no_repr_message_or_pickle(caplog):
    """Nothing a user can print, log or pickle shows the token, faults and errors included."""
    caplog.set_level(logging.DEBUG)
    seen = []
    async with FakeRunComfy(token=TOKEN, time_scale=0.001, run_time=Fixed(1.0)) as fake:
        image = f"{fake.base_url}/_emulator/images/640x480.png"
        fake.inject("submit", "rate_limited")
        fake.inject("result", "server_error", times=2)
        fake.inject("status", "html_error")
        fake.inject("cancel", "drop_before")
        seen += await collect_everything(fake.base_url, image)

        # An unknown token: 401, on every call kind.
        async with opened(fake.base_url, token=OTHER_TOKEN) as intruder:
            seen += [intruder, intruder._transport, intruder.api]
            for call in (intruder.api.submit(ModelRequest(GENERIC, {})), intruder.api.status("r")):
                with pytest.raises(RunComfyError) as denied:
                    await call
                seen.append(denied.value)
            job = intruder.submit(ModelRequest(GENERIC, {}))
            seen += [job, (await intruder.gather([job]))[0]]

        # A paid submit that drops: uncertain.
        async with opened(fake.base_url) as client:
            fake.inject("submit", "drop_after")
            with pytest.raises(SubmissionUncertainError) as uncertain:
                await client.api.submit(ModelRequest(GENERIC, {}))
            seen += [uncertain.value, uncertain.value.__cause__]

    # A refused connection.
    async with opened(fake.base_url) as client:
        with pytest.raises(ConnectError) as refused:
            await client.api.status("r")
        seen += [refused.value, client]

    assert len(seen) >= 20
    for value in seen:
        assert_nothing_shows(value)
        if not isinstance(value, Secret):
            assert TOKEN.encode() not in pickled(value)
            assert OTHER_TOKEN.encode() not in pickled(value)

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    assert any(r.name == "runcomfy_async" for r in caplog.records)
    for record in caplog.records:
        line = formatter.format(record)
        assert TOKEN not in line, line
        assert OTHER_TOKEN not in line, line


@pytest.mark.parametrize(
    "holder",
    [
        pytest.param(lambda c: c._transport._token, id="secret"),
        pytest.param(lambda c: c._transport, id="transport"),
        pytest.param(lambda c: c._api, id="api"),
        pytest.param(lambda c: c, id="client"),
    ],
)
def test_token_holders_refuse_pickling(holder):
    """Whatever holds the token cannot be pickled, so it never reaches a disk."""
    client = RunComfy(TOKEN, base_url="http://127.0.0.1:9")

    with pytest.raises((TypeError, pickle.PicklingError)):
        pickle.dumps(holder(client))
    assert TOKEN.encode() not in pickled(holder(client))


async def test_logged_bearer_is_masked(caplog):
    """Even a message that did contain a bearer token is masked by the library's logger."""
    caplog.set_level(logging.DEBUG, logger="runcomfy_async")

    logging.getLogger("runcomfy_async").debug("sent Authorization: Bearer %s", TOKEN)

    assert ["sent Authorization: Bearer ***"] == [r.getMessage() for r in caplog.records]


async def test_echoed_token_is_not_kept_in_errors(serving):
    """A server that echoes the request headers into an error body leaks nothing."""

    async def echo(request):
        body = f"<html>bad request; you sent {dict(request.headers)!r}</html>"
        return web.Response(status=400, text=body, content_type="text/html")

    async with serving(echo) as base_url, opened(base_url) as client:
        with pytest.raises(RunComfyError) as info:
            await client.api.status("r")

    # Not the locals: the parsing frames hold the body the server sent back.
    assert_nothing_shows(info.value, with_locals=False)
    assert "you sent" in info.value.message


# -- which requests carry the token --------------------------------------------------------


async def test_token_only_goes_to_the_api():
    """Every API request carries exactly the bearer token; nothing else carries any."""
    clock = ManualClock()
    async with FakeRunComfy(token=TOKEN, clock=clock, run_time=Fixed(1.0)) as fake:
        image = f"{fake.base_url}/_emulator/images/640x480.png"
        async with opened(fake.base_url) as client:
            rids = [
                (await client.api.submit(request)).request_id
                for request in (
                    ImageToVideo(prompt="a cat", image_url=image),
                    ModelRequest(GENERIC, {"prompt": "a dog"}),
                )
            ]
            clock.advance(2.0)
            states = [await client.api.result(rid) for rid in rids]
            await client.api.status(rids[0])
            await client.api.cancel(rids[1])
        recorded = fake.requests

    assert all(isinstance(state, Succeeded) for state in states), states
    api = [r for r in recorded if r.kind in API_KINDS]
    other = [r for r in recorded if r.kind not in API_KINDS]
    assert API_KINDS == {r.kind for r in api}
    assert "image" in {r.kind for r in other}
    assert {f"Bearer {TOKEN}"} == {r.headers.get("authorization") for r in api}
    assert [] == [r for r in other if "authorization" in r.headers]
    assert [] == [r for r in recorded if TOKEN in repr(r.query) or TOKEN in r.path]


# -- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(code, serving):
    """A redirect is a ProtocolError; the redirect target never hears from the client."""
    elsewhere = []

    async def target(request):
        elsewhere.append((request.path, request.headers.get("Authorization")))
        return web.json_response({"request_id": "r", "status": "in_progress"})

    async with serving(target) as target_url:

        async def redirector(request):
            return web.Response(status=code, headers={"Location": f"{target_url}{request.path_qs}"})

        async with serving(redirector) as base_url, opened(base_url) as client:
            with pytest.raises(ProtocolError) as status_error:
                await client.api.status("r")
            with pytest.raises(SubmissionUncertainError) as submit_error:
                await client.api.submit(ModelRequest(GENERIC, {}))

    assert [] == elsewhere
    assert code == status_error.value.status
    assert isinstance(submit_error.value.__cause__, ProtocolError)


# -- a malformed HTTP answer: the whole chain, attributes and locals ----------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"garbage\r\n\r\n", id="bad-status-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}", id="bad-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-Echo: a\x00{token}\r\nContent-Length: 2\r\n\r\n{}",
            id="echoed-in-bad-header",
        ),
    ],
)
async def test_malformed_http_answer_leaves_no_token_anywhere(answer, caplog):
    """No exception of the chain, no attribute and no traceback local holds the token."""
    caplog.set_level(logging.DEBUG)
    async with raw_http_server(answer) as base_url, opened(base_url) as client:
        with pytest.raises(SubmissionUncertainError) as uncertain:
            await client.api.submit(ModelRequest(GENERIC, {"prompt": "a cat"}))
        with pytest.raises(RunComfyError) as failed:
            await client.api.status("r")

    for error in (uncertain.value, failed.value):
        assert_nothing_shows(error)
        chain = list(exception_chain(error))
        assert all(isinstance(e, RunComfyError) for e in chain), chain
    assert isinstance(uncertain.value.__cause__, TransportError)
    assert "answer" in str(uncertain.value.__cause__)
    for record in caplog.records:
        assert_token_absent(logging.Formatter("%(message)s").format(record))


# -- masking: only text that leaves the library (issue #6, defect 4) -------------------------


async def test_a_token_that_occurs_in_answers_does_not_change_them():
    """A short token found inside answers is not masked in the data that is parsed."""
    token = "_id"  # occurs in every answer ("request_id")
    async with FakeRunComfy(token=token, time_scale=0.001, run_time=Fixed(1.0)) as fake:
        async with opened(fake.base_url, token=token) as client:
            submission = await client.api.submit(ModelRequest(GENERIC, {"prompt": "a cat"}))
            state = await client.api.status(submission.request_id)
        assert submission.request_id in fake.jobs
    assert not isinstance(state, RunComfyError)


async def test_a_token_echoed_in_an_error_message_is_masked(serving):
    """The token is masked where an answer becomes an error message, JSON or not."""

    async def echo(request):
        sent = request.headers["Authorization"]
        return web.json_response(
            {"error_code": 422001, "error_message": f"bad: {sent}"}, status=422
        )

    async with serving(echo) as base_url, opened(base_url) as client:
        with pytest.raises(InputRejectedError) as info:
            await client.api.status("r")

    assert_nothing_shows(info.value, with_locals=False)
    assert "bad: Bearer ***" == info.value.message


# -- a server's request id never names another job, nor a file ------------------------------


@pytest.mark.parametrize("kind", ["status", "result", "cancel"])
@pytest.mark.parametrize("foreign", ["other-job", "../../escaped", "/somewhere/escaped"])
def test_an_answer_about_another_job_is_a_protocol_error(kind, foreign):
    """An answer whose request_id is not the job's own is refused, not believed."""
    body = {"request_id": foreign, "status": "succeeded", "outcome": "cancelled"}
    body["output"] = {"video": "https://runcomfy.net/v.mp4"}
    parse = {"status": parse_status, "result": parse_result, "cancel": parse_cancel}[kind]

    with pytest.raises(ProtocolError, match="request_id") as info:
        parse(Reply(200, json.dumps(body).encode()), "job-1")

    assert "job-1" == info.value.request_id


# -- a whole faulty batch, downloads included ----------------------------------------------------

BATCH_FAULTS = Faults(
    server_error_rate=0.04,
    unavailable_rate=0.04,
    html_error_rate=0.04,
    drop_before_rate=0.04,
    drop_after_rate=0.04,
    rate_limited_rate=0.04,
    malformed_rate=0.04,
    malformed_http_rate=0.04,
    foreign_request_id_rate=0.04,
    empty_file_name_rate=0.08,
    foreign_id="../../escaped",
)


async def test_a_faulty_batch_shows_the_token_nowhere(tmp_path, caplog, serving):
    """Logs, objects, error chains with locals, file requests and file names: all clean."""
    caplog.set_level(logging.DEBUG)
    file_hits = []

    async def file_host(request):
        file_hits.append(request)
        return web.Response(body=b"video-bytes")

    seen: list[object] = []
    async with (
        serving(file_host) as files,
        FakeRunComfy(
            token=TOKEN, time_scale=0.001, run_time=Fixed(1.0), faults=BATCH_FAULTS
        ) as fake,
        opened(fake.base_url, output_hosts=("127.0.0.1",)) as client,
    ):
        image = f"{fake.base_url}/_emulator/images/640x480.png"
        requests = [ImageToVideo(prompt=f"a cat {i}", image_url=image) for i in range(15)]
        requests += [ModelRequest(GENERIC, {"prompt": f"a dog {i}"}) for i in range(15)]
        jobs = client.submit_many(requests)
        outcomes = await client.gather(jobs)
        results = [o for o in outcomes if isinstance(o, JobResult)]
        seen += [await client.download(result, tmp_path) for result in results]
        # A hostile output: a name that sanitises to nothing, an id that climbs.
        hostile = JobResult(request_id="../../x", video_urls=(f"{files}/%3F%3F",))
        seen.append(await client.download(hostile, tmp_path))
        seen += [client, client._transport, client.api, client.stats, *jobs, *outcomes]
        recorded = fake.requests

    errors = [o for o in outcomes if isinstance(o, RunComfyError)]
    assert results, outcomes
    assert errors, "the faults should have cost some job its result"
    assert all(r.request_id in fake.jobs for r in results)
    for value in seen:
        assert_nothing_shows(value)
    for record in caplog.records:
        assert_token_absent(logging.Formatter("%(name)s %(message)s %(exc_text)s").format(record))
        assert_token_absent(repr(record.args))
    public = [r for r in recorded if r.kind not in API_KINDS]
    assert {"image", "file"} <= {r.kind for r in public}
    for request in public:
        assert "authorization" not in {k.lower() for k in request.headers}
        assert_token_absent(repr(request.headers))
    assert 1 == len(file_hits)
    assert_token_absent(repr(dict(file_hits[0].headers)))
    assert all(p.parent == tmp_path for p in tmp_path.rglob("*"))
    assert "x.mp4" in {p.name for p in tmp_path.iterdir()}
