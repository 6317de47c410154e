"""The four single calls against the emulator, over real loopback HTTP."""

from __future__ import annotations

import contextlib
import socket

import anyio
import pytest
from aiohttp import web
from conftest import FAKE_TIME_SCALE, FAKE_TOKEN, fast_retry_policy

from runcomfy_async import (
    APIError,
    AuthenticationError,
    Cancelled,
    CancelOutcome,
    Completed,
    ConnectError,
    Failed,
    ImageToVideo,
    InputRejectedError,
    InsufficientBalanceError,
    Limits,
    ModelNotFoundError,
    ModelRequest,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    Queued,
    RateLimitedError,
    RequestTimeoutError,
    RunComfy,
    Running,
    ServerError,
    SubmissionUncertainError,
    Succeeded,
    Timeouts,
    TransportError,
)
from runcomfy_async.testing import (
    FakeRunComfy,
    Faults,
    Fixed,
    JobPlan,
    ManualClock,
    sample_image_data_uri,
)

GENERIC = "acme/generic/text-to-video"
SEED = "bytedance/dreamina-3-0/pro/image-to-video"
RUN = 10.0
"""Nominal run time of every emulated job (the clock only moves when told)."""

ATTEMPTS = 4
"""Tries per exchange in the ``client`` fixture's retry policy."""


@pytest.fixture
def clock():
    """The emulator's clock: jobs move only when a test advances it."""
    return ManualClock()


@pytest.fixture
def faults():
    """The emulator's fault switches; parametrize to turn drifts on."""
    return Faults()


@pytest.fixture
def fake_options(clock, faults):
    """Jobs run RUN nominal seconds on the manual clock; 429 hints are 1 ms."""
    return {"clock": clock, "run_time": Fixed(RUN), "faults": faults}


def generic():
    return ModelRequest(GENERIC, {"prompt": "a cat"})


def finish_all(clock):
    clock.advance(RUN * 10)


def always_fail(_model, _payload):
    return JobPlan(outcome="failed")


async def new_job(client):
    return (await client.api.submit(generic())).request_id


@contextlib.asynccontextmanager
async def opened(base_url, token=FAKE_TOKEN, **options):
    """A client like the ``client`` fixture, for other servers or tokens."""
    settings = {
        "retry": fast_retry_policy(),
        "limits": Limits(initial_rate=1000.0, burst=100.0),
        **options,
    }
    async with RunComfy(token, base_url=base_url, **settings) as client:
        yield client


@contextlib.asynccontextmanager
async def emulated(**options):
    """An emulator with its own options, and a client pointed at it."""
    async with FakeRunComfy(**options) as fake, opened(fake.base_url) as client:
        yield fake, client


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the happy path --------------------------------------------------------------------


async def test_full_lifecycle(fake, client, clock):
    """Submit, poll status and result, and read the output and metadata."""
    submission = await client.api.submit(generic())
    rid = submission.request_id

    assert f"{fake.base_url}/v1/requests/{rid}/status" == submission.status_url
    assert Running() == await client.api.status(rid)
    assert Running() == await client.api.result(rid)

    finish_all(clock)

    assert Completed() == await client.api.status(rid)
    state = await client.api.result(rid)
    assert isinstance(state, Succeeded)
    result = state.result
    assert (rid, GENERIC) == (result.request_id, result.model_id)
    assert f"{fake.base_url}/_emulator/files/{rid}.mp4" == result.video_url
    assert fake.jobs[rid].cost == result.cost
    assert RUN * FAKE_TIME_SCALE == pytest.approx(result.run_seconds, abs=1e-5)


async def test_image_to_video_is_sent_in_the_seed_schema(fake, client):
    """An ImageToVideo arrives as the seed model's JSON body, and is accepted."""
    image = sample_image_data_uri(640, 480)
    request = ImageToVideo(prompt="a cat", image_url=image, seed=3, frames=241)

    rid = (await client.api.submit(request)).request_id

    assert SEED == fake.jobs[rid].model_id
    assert {"prompt": "a cat", "image_urls": [image], "seed": 3, "frames": 241} == (
        fake.jobs[rid].payload
    )


async def test_request_headers(fake, client):
    """API requests carry the token, JSON headers and a User-Agent; results ask the cost."""
    rid = await new_job(client)
    await client.api.status(rid)
    await client.api.result(rid)
    await client.api.cancel(rid)

    submit, status, result, cancel = fake.requests
    for recorded in (submit, status, result, cancel):
        assert f"Bearer {FAKE_TOKEN}" == recorded.headers["authorization"]
        assert "application/json" == recorded.headers["accept"]
        assert recorded.headers["user-agent"].startswith("runcomfy-async/")
    assert "application/json" == submit.headers["content-type"]
    assert ("POST", f"/v1/models/{GENERIC}") == (submit.method, submit.path)
    assert {"include_cost": "true"} == result.query
    assert ("POST", f"/v1/requests/{rid}/cancel") == (cancel.method, cancel.path)


async def test_queue_positions(clock):
    """Queued jobs report their place in line; it moves as jobs finish."""
    async with emulated(clock=clock, run_time=Fixed(RUN), slots=1) as (_, one_slot):
        rids = [await new_job(one_slot) for _ in range(3)]

        assert [Running(), Queued(0), Queued(1)] == [await one_slot.api.status(rid) for rid in rids]
        clock.advance(RUN)
        assert [Completed(), Running(), Queued(0)] == [
            await one_slot.api.status(rid) for rid in rids
        ]


# -- drift switches, end to end ----------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(submit_202=True), id="202"),
        pytest.param(Faults(submit_202=True, upper_case_status=True), id="202-upper"),
    ],
)
async def test_submit_202(fake, client, faults):
    """A 202 submit answer with a status is an accepted job."""
    rid = await new_job(client)

    assert [rid] == list(fake.jobs)


@pytest.mark.parametrize("faults", [Faults(upper_case_status=True)], ids=["upper"])
async def test_upper_case_status(fake, client, clock, faults):
    """UPPER CASE states parse like lower case ones, on both endpoints."""
    rid = await new_job(client)
    assert (Running(), Running()) == (await client.api.status(rid), await client.api.result(rid))

    finish_all(clock)

    assert Completed() == await client.api.status(rid)
    assert isinstance(await client.api.result(rid), Succeeded)


@pytest.mark.parametrize(
    ("faults", "on_status"),
    [
        pytest.param(Faults(), Completed(), id="documented-completed"),
        pytest.param(
            Faults(failed_on_status=True),
            Failed(message="the job failed (the server gave no reason)"),
            id="failed-on-status",
        ),
    ],
)
async def test_failed_job(clock, faults, on_status):
    """A failed job shows ``completed`` or ``failed`` on /status, ``failed`` on /result."""
    options = {"clock": clock, "run_time": Fixed(RUN), "faults": faults, "plan": always_fail}
    async with emulated(**options) as (_, client):
        rid = await new_job(client)
        finish_all(clock)

        assert on_status == await client.api.status(rid)
        assert Failed(
            message="content policy violation",
            error={"message": "content policy violation", "code": "E_MODEL"},
        ) == await client.api.result(rid)


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(), id="cancelled"),
        pytest.param(Faults(canceled_spelling=True), id="canceled"),
        pytest.param(Faults(canceled_spelling=True, upper_case_status=True), id="CANCELED"),
    ],
)
async def test_cancel_queued_job(clock, faults):
    """Cancelling a queued job works, in either spelling, and shows on both endpoints."""
    async with emulated(clock=clock, run_time=Fixed(RUN), slots=1, faults=faults) as (fake, client):
        await new_job(client)
        queued = await new_job(client)

        outcome = await client.api.cancel(queued)

        assert outcome.cancelled
        assert "cancelled" == outcome.status
        assert fake.jobs[queued].cancelled
        assert Cancelled() == await client.api.status(queued)
        assert Cancelled() == await client.api.result(queued)


async def test_cancel_running_job_is_not_cancellable(fake, client):
    """A running job cannot be cancelled: it runs on (and is billed)."""
    rid = await new_job(client)

    outcome = await client.api.cancel(rid)

    assert (
        CancelOutcome(
            request_id=rid, cancelled=False, status="in_progress", outcome="not_cancellable"
        )
        == outcome
    )
    assert "in_progress" == fake.jobs[rid].state


async def test_cancel_finished_job(fake, client, clock):
    """Cancelling a finished job says so and changes nothing."""
    rid = await new_job(client)
    finish_all(clock)

    outcome = await client.api.cancel(rid)

    assert (False, "completed") == (outcome.cancelled, outcome.status)
    assert "succeeded" == fake.jobs[rid].state


@pytest.mark.parametrize("faults", [Faults(result_not_ready=True)], ids=["400005"])
async def test_result_not_ready(fake, client, clock, faults):
    """/result of an unfinished job answered 400005 reads as Running."""
    rid = await new_job(client)

    assert Running() == await client.api.result(rid)
    assert 1 == fake.count("result")

    finish_all(clock)
    assert isinstance(await client.api.result(rid), Succeeded)


@pytest.mark.parametrize(
    "faults", [Faults(result_not_ready=True, errors_as_200=True)], ids=["400005-as-200"]
)
async def test_result_not_ready_as_200(fake, client, faults):
    """400005 sent with HTTP 200 also reads as Running."""
    rid = await new_job(client)

    assert Running() == await client.api.result(rid)


@pytest.mark.parametrize("faults", [Faults(status_completed_for_success=False)], ids=["succeeded"])
async def test_succeeded_on_status(fake, client, clock, faults):
    """``succeeded`` on /status means finished, like ``completed``."""
    rid = await new_job(client)
    finish_all(clock)

    assert Completed() == await client.api.status(rid)


async def test_output_videos_list(clock):
    """An output with a list of videos exposes them all, the first as primary."""
    async with emulated(clock=clock, run_time=Fixed(RUN), output="videos") as (fake, client):
        rid = await new_job(client)
        finish_all(clock)
        state = await client.api.result(rid)

    assert isinstance(state, Succeeded)
    base = f"{fake.base_url}/_emulator/files/{rid}"
    assert (f"{base}.mp4", f"{base}-2.mp4") == state.result.video_urls
    assert f"{base}.mp4" == state.result.video_url


@pytest.mark.parametrize("faults", [Faults(errors_as_200=True)], ids=["errors-as-200"])
async def test_errors_as_200(fake, client, faults):
    """Errors sent with HTTP 200 and an error_code raise their error class."""
    with pytest.raises(NotFoundError) as not_found:
        await client.api.status("no-such-job")
    with pytest.raises(ModelNotFoundError):
        await client.api.submit(ModelRequest("acme/unknown/model", {}))
    with pytest.raises(InputRejectedError) as rejected:
        await client.api.submit(ModelRequest(SEED, {"prompt": "a cat"}))
    async with opened(fake.base_url, token="wrong-token") as intruder:
        with pytest.raises(AuthenticationError):
            await intruder.api.status("no-such-job")

    assert (200, 404001) == (not_found.value.status, not_found.value.error_code)
    assert [["body", "image_urls"]] == [p["loc"] for p in rejected.value.detail]
    assert 0 == len(fake.jobs)


# -- retries of safe calls -------------------------------------------------------------

ANSWER_FAULTS = [
    "server_error",
    "html_error",
    "rate_limited",
    "rate_limited_no_retry_after",
    "malformed",
    "error_200",
]


@pytest.mark.parametrize("fault", ANSWER_FAULTS)
@pytest.mark.parametrize("kind", ["status", "result", "cancel"])
async def test_safe_calls_retry_bad_answers(fake, client, kind, fault):
    """Status, result and cancel are repeated after 5xx, 429 and malformed answers."""
    rid = await new_job(client)
    fake.inject(kind, fault, times=2)

    await getattr(client.api, kind)(rid)

    assert 3 == fake.count(kind)
    assert 2 == client.stats.retries


@pytest.mark.parametrize("fault", ["drop_before", "drop_after"])
@pytest.mark.parametrize("kind", ["status", "result"])
async def test_gets_retry_dropped_connections(fake, client, kind, fault):
    """A GET whose connection drops is repeated."""
    # aiohttp itself resends an idempotent request once on a dropped
    # connection, so two drops make one failed exchange for the client.
    rid = await new_job(client)
    fake.inject(kind, fault, times=2)

    await getattr(client.api, kind)(rid)

    assert 3 == fake.count(kind)
    assert 1 == client.stats.retries


@pytest.mark.parametrize("fault", ["drop_before", "drop_after"])
async def test_cancel_retries_dropped_connections(clock, fault):
    """Cancel is safe to repeat, so a dropped one is repeated (aiohttp never resends a POST)."""
    async with emulated(clock=clock, run_time=Fixed(RUN), slots=1) as (small, one_slot):
        await new_job(one_slot)
        queued = await new_job(one_slot)
        small.inject("cancel", fault, times=2)

        outcome = await one_slot.api.cancel(queued)

        assert 3 == small.count("cancel")
        assert outcome.cancelled
        assert small.jobs[queued].cancelled


async def test_slow_answer_within_the_timeout(fake, client):
    """A slow answer (5 ms) is simply waited for."""
    rid = await new_job(client)
    fake.inject("status", "slow")

    assert Running() == await client.api.status(rid)
    assert (1, 0) == (fake.count("status"), client.stats.retries)


@pytest.mark.parametrize("faults", [Faults(slow_seconds=2000.0)], ids=["2s-late"])
async def test_read_timeout_on_a_get_is_retried(fake, faults):
    """A GET that times out is repeated."""
    async with opened(fake.base_url, timeouts=Timeouts(read=0.05, total=0.1)) as client:
        rid = await new_job(client)
        fake.inject("status", "slow")

        assert Running() == await client.api.status(rid)

        assert 1 == client.stats.retries


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param("server_error", (ServerError, 500), id="server_error"),
        pytest.param("html_error", (ServerError, 502), id="html_error"),
        pytest.param("error_200", (ServerError, 200), id="error_200"),
        pytest.param("rate_limited", (RateLimitedError, 429), id="rate_limited"),
        pytest.param("rate_limited_no_retry_after", (RateLimitedError, 429), id="no_retry_after"),
        pytest.param("malformed", (ProtocolError, 200), id="malformed"),
    ],
)
@pytest.mark.parametrize("kind", ["status", "result", "cancel"])
async def test_attempts_exhausted(fake, client, kind, fault, expected):
    """When every try fails, the last error is raised, naming the job."""
    cls, status = expected
    rid = await new_job(client)
    fake.inject(kind, fault, times=ATTEMPTS)

    with pytest.raises(cls) as info:
        await getattr(client.api, kind)(rid)

    assert (status, rid) == (info.value.status, info.value.request_id)
    assert ATTEMPTS == fake.count(kind)
    assert 0 == fake.pending_faults


async def test_attempts_exhausted_html_keeps_a_snippet(fake, client):
    """An HTML 502 that never goes away is a ServerError with a short message."""
    rid = await new_job(client)
    fake.inject("status", "html_error", times=ATTEMPTS)

    with pytest.raises(ServerError) as info:
        await client.api.status(rid)

    assert "502 Bad Gateway" in info.value.message
    assert len(info.value.message) <= 303


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param("rate_limited", 0.001, id="with-hint"),
        pytest.param("rate_limited_no_retry_after", None, id="without-hint"),
    ],
)
async def test_rate_limited_exhausted_keeps_the_hint(fake, client, fault, expected):
    """The last 429's Retry-After is on the RateLimitedError."""
    rid = await new_job(client)
    fake.inject("status", fault, times=ATTEMPTS)

    with pytest.raises(RateLimitedError) as info:
        await client.api.status(rid)

    assert expected == info.value.retry_after
    assert ATTEMPTS == client.stats.rate_limited


async def test_dropped_cancel_exhausted(fake, client):
    """A cancel whose connection always drops ends in a TransportError."""
    rid = await new_job(client)
    fake.inject("cancel", "drop_before", times=ATTEMPTS)

    with pytest.raises(TransportError) as info:
        await client.api.cancel(rid)

    assert (True, rid) == (info.value.sent, info.value.request_id)
    assert ATTEMPTS == fake.count("cancel")


@pytest.mark.parametrize("fake_options", [{"time_scale": 0.04}], ids=["40ms-hints"])
async def test_retry_after_is_honoured(fake, client, fake_options):
    """The client waits at least the server's Retry-After, not just its backoff."""
    rid = await new_job(client)
    fake.inject("status", "rate_limited", times=2)

    start = anyio.current_time()
    await client.api.status(rid)
    waited = anyio.current_time() - start

    assert waited >= 2 * 0.04 - 0.002
    assert 3 == fake.count("status")


@pytest.mark.parametrize("faults", [Faults(retry_after="date")], ids=["date"])
async def test_retry_after_http_date_is_read(fake, faults):
    """A Retry-After HTTP date is read, and capped by ``max_retry_after``."""
    retry = fast_retry_policy(attempts=2, max_retry_after=0.01)
    async with opened(fake.base_url, retry=retry) as client:
        rid = await new_job(client)
        fake.inject("status", "rate_limited", times=2)

        start = anyio.current_time()
        with pytest.raises(RateLimitedError) as info:
            await client.api.status(rid)
        waited = anyio.current_time() - start

    assert info.value.retry_after is not None
    assert 0.0 <= info.value.retry_after <= 2.0
    assert waited < 0.5


@pytest.mark.parametrize(
    "faults", [Faults(rate_limit=400.0, rate_burst=2.0)], ids=["hidden-limit-400/s"]
)
async def test_hidden_rate_limit(fake, faults):
    """Bursts over the server's hidden limit get 429s, and every call still succeeds."""
    states = []
    limits = Limits(initial_rate=200.0, burst=4.0)
    async with opened(fake.base_url, retry=fast_retry_policy(attempts=10), limits=limits) as client:
        rid = await new_job(client)

        async def poll():
            states.append(await client.api.status(rid))

        async with anyio.create_task_group() as group:
            for _ in range(12):
                group.start_soon(poll)

    assert [Running()] * 12 == states
    assert fake.rejected > 0
    assert fake.rejected == client.stats.rate_limited
    assert 12 + fake.rejected == fake.count("status")


async def test_huge_retry_after_is_capped(serving):
    """A hostile ``Retry-After: 3600`` stalls nothing beyond ``max_retry_after``."""
    answers = iter(
        [web.json_response({"error_code": None}, status=429, headers={"Retry-After": "3600"})]
    )

    async def handler(request):
        answer = next(answers, None)
        return answer or web.json_response({"request_id": "r", "status": "in_progress"})

    async with serving(handler) as base_url:
        retry = fast_retry_policy(max_retry_after=0.02)
        async with opened(base_url, retry=retry) as client:
            with anyio.fail_after(2):
                start = anyio.current_time()
                assert Running() == await client.api.status("r")
                waited = anyio.current_time() - start

    assert 0.02 <= waited < 0.5


async def test_unknown_status_is_reported_at_once(serving):
    """An unknown status word is a ProtocolError at once, naming the word and the body."""
    seen = []

    async def handler(request):
        seen.append(request.path)
        return web.json_response({"request_id": "r", "status": "paused"})

    async with serving(handler) as base_url, opened(base_url) as client:
        with pytest.raises(ProtocolError, match="paused") as raised:
            await client.api.status("r")

    assert 1 == len(seen)
    assert not raised.value.retryable
    assert '"request_id": "r"' in raised.value.message


# -- the paid submit ---------------------------------------------------------------------


async def test_submit_dropped_after_processing_is_uncertain(fake, client):
    """A submit whose answer is lost raises SubmissionUncertainError; one job, one submit."""
    fake.inject("submit", "drop_after")

    with pytest.raises(SubmissionUncertainError) as info:
        await client.api.submit(generic())

    assert (1, 1) == (len(fake.jobs), fake.count("submit"))
    assert GENERIC == info.value.model_id
    assert isinstance(info.value.__cause__, TransportError)
    assert 0 == client.stats.retries


async def test_submit_dropped_before_processing_is_uncertain(fake, client):
    """A dropped connection cannot prove the submit unsent: uncertain, never re-sent."""
    fake.inject("submit", "drop_before")

    with pytest.raises(SubmissionUncertainError) as info:
        await client.api.submit(generic())

    assert (0, 1) == (len(fake.jobs), fake.count("submit"))
    assert info.value.__cause__.sent


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        pytest.param("server_error", ServerError, id="500"),
        pytest.param("html_error", ServerError, id="html-502"),
        pytest.param("error_200", ServerError, id="200-with-500001"),
        pytest.param("malformed", ProtocolError, id="malformed"),
    ],
)
async def test_submit_unclear_answer_is_uncertain(fake, client, fault, cause):
    """A 5xx (not 503) or unreadable answer to a submit is uncertain; never re-sent."""
    fake.inject("submit", fault)

    with pytest.raises(SubmissionUncertainError) as info:
        await client.api.submit(generic())

    assert 1 == fake.count("submit")
    assert isinstance(info.value.__cause__, cause)
    assert info.value.status == info.value.__cause__.status


async def test_submit_malformed_answer_job_exists(fake, client):
    """A malformed answer comes after processing: the uncertain job is real."""
    fake.inject("submit", "malformed")

    with pytest.raises(SubmissionUncertainError):
        await client.api.submit(generic())

    assert 1 == len(fake.jobs)


@pytest.mark.parametrize("faults", [Faults(slow_seconds=2000.0)], ids=["2s-late"])
async def test_submit_read_timeout_is_uncertain(fake, faults):
    """A submit that times out after sending is uncertain, and not re-sent."""
    async with opened(fake.base_url, timeouts=Timeouts(read=0.05, total=0.1)) as client:
        fake.inject("submit", "slow")

        with pytest.raises(SubmissionUncertainError) as info:
            await client.api.submit(generic())

    assert isinstance(info.value.__cause__, RequestTimeoutError)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert 1 == fake.count("submit")


@pytest.mark.parametrize("fault", ["rate_limited", "rate_limited_no_retry_after"])
async def test_submit_rate_limited_is_retried(fake, client, fault):
    """A 429 means not accepted: the submit is re-sent, and one job exists."""
    fake.inject("submit", fault, times=2)

    rid = await new_job(client)

    assert ([rid], 3) == (list(fake.jobs), fake.count("submit"))
    assert 2 == client.stats.retries


async def test_submit_rate_limited_exhausted(fake, client):
    """A submit that stays rate limited raises RateLimitedError: nothing was created."""
    fake.inject("submit", "rate_limited", times=ATTEMPTS)

    with pytest.raises(RateLimitedError):
        await client.api.submit(generic())

    assert (0, ATTEMPTS) == (len(fake.jobs), fake.count("submit"))


async def test_submit_503_is_retried(clock):
    """A 503 means not accepted: the submit is re-sent, and one job exists."""
    async with (
        FakeRunComfy(clock=clock, run_time=Fixed(RUN)) as fake,
        opened(fake.base_url) as client,
    ):
        fake.inject("submit", "unavailable")
        rid = await new_job(client)

        assert [rid] == list(fake.jobs)
        assert 2 == fake.count("submit")
        assert 1 == client.stats.retries


async def test_connection_refused_is_retried_then_connect_error():
    """A closed port proves nothing was sent: every call retries, then ConnectError."""
    retries = []
    async with opened(f"http://127.0.0.1:{closed_port()}") as client:
        with pytest.raises(ConnectError) as submit_error:
            await client.api.submit(generic(), on_retry=lambda: retries.append("submit"))
        with pytest.raises(ConnectError) as status_error:
            await client.api.status("r", on_retry=lambda: retries.append("status"))

        assert {"submit": ATTEMPTS, "status": ATTEMPTS} == dict(client.stats.requests)

    assert ["submit"] * (ATTEMPTS - 1) + ["status"] * (ATTEMPTS - 1) == retries
    assert (False, False) == (submit_error.value.sent, status_error.value.sent)


async def test_wrong_token_raises_at_once(fake):
    """401 on any call raises AuthenticationError after one request."""
    async with opened(fake.base_url, token="wrong-token") as client:
        for call in (
            client.api.submit(generic()),
            client.api.status("r"),
            client.api.result("r"),
            client.api.cancel("r"),
        ):
            with pytest.raises(AuthenticationError) as info:
                await call
            assert (401, 401001) == (info.value.status, info.value.error_code)

    assert (1, 1, 1, 1) == tuple(fake.count(k) for k in ("submit", "status", "result", "cancel"))
    assert 0 == len(fake.jobs)


@pytest.mark.parametrize("fake_options", [{"balance": 0.0}], ids=["broke"])
async def test_insufficient_balance(fake, client, fake_options):
    """402 raises InsufficientBalanceError after one request; no job."""
    with pytest.raises(InsufficientBalanceError) as info:
        await client.api.submit(generic())

    assert (402, 400002) == (info.value.status, info.value.error_code)
    assert (1, 0) == (fake.count("submit"), len(fake.jobs))


async def test_unknown_model(fake, client):
    """An unknown model is a ModelNotFoundError (a NotFoundError) after one request."""
    with pytest.raises(ModelNotFoundError) as info:
        await client.api.submit(ModelRequest("acme/unknown/model", {}))

    assert isinstance(info.value, NotFoundError)
    assert (404, 400001) == (info.value.status, info.value.error_code)
    assert 1 == fake.count("submit")


async def test_schema_mismatch_lists_the_fields(fake, client):
    """422 raises InputRejectedError at once, its ``detail`` naming every bad field."""
    payload = {"prompt": "", "image_urls": [], "frames": 120, "style": "noir"}

    with pytest.raises(InputRejectedError) as info:
        await client.api.submit(ModelRequest(SEED, payload))

    assert (422, 422001) == (info.value.status, info.value.error_code)
    assert [
        ["body", "style"],
        ["body", "prompt"],
        ["body", "image_urls"],
        ["body", "frames"],
    ] == [problem["loc"] for problem in info.value.detail]
    assert (1, 0) == (fake.count("submit"), len(fake.jobs))


async def test_server_side_image_check(fake, client):
    """A URL the client cannot inspect is checked by the server: 422 on the image."""
    request = ImageToVideo(
        prompt="a cat", image_url=f"{fake.base_url}/_emulator/images/200x200.png"
    )

    with pytest.raises(InputRejectedError) as info:
        await client.api.submit(request)

    assert [(["body", "image_urls", 0], "dimensions")] == [
        (problem["loc"], problem["type"]) for problem in info.value.detail
    ]


@pytest.mark.parametrize("kind", ["status", "result", "cancel"])
async def test_unknown_request_id(fake, client, kind):
    """An unknown request id raises NotFoundError after one request."""
    with pytest.raises(NotFoundError) as info:
        await getattr(client.api, kind)("no-such-job")

    assert (404, 404001, "no-such-job") == (
        info.value.status,
        info.value.error_code,
        info.value.request_id,
    )
    assert 1 == fake.count(kind)


@pytest.mark.parametrize("fake_options", [{"other_tokens": ["other-token"]}], ids=["two-accounts"])
async def test_other_accounts_job(fake, client, fake_options):
    """Another account's request id raises PermissionDeniedError after one request."""
    async with opened(fake.base_url, token="other-token") as other:
        rid = await new_job(other)

    with pytest.raises(PermissionDeniedError) as info:
        await client.api.status(rid)

    assert (403, 403001) == (info.value.status, info.value.error_code)
    assert 1 == fake.count("status")


async def test_plain_api_error_is_not_retried(serving):
    """An unmapped 4xx raises a plain APIError after one request, on every call."""
    seen = []

    async def handler(request):
        seen.append(request.method)
        return web.json_response({"error_code": 400123, "error_message": "odd"}, status=400)

    async with serving(handler) as base_url, opened(base_url) as client:
        with pytest.raises(APIError) as info:
            await client.api.submit(generic())
        with pytest.raises(APIError):
            await client.api.status("r")

    assert APIError is type(info.value)
    assert ["POST", "GET"] == seen
