"""The emulator, over real loopback HTTP with a plain aiohttp client."""

# The house style is `assert expected == actual`.

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import email.utils
import inspect
import io
import json
import math
import random
import re
import struct
import time
import typing
import uuid
import zlib
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import anyio
import attrs
import pytest

import runcomfy_async.testing
from runcomfy_async._images import inspect_image
from runcomfy_async.testing import (
    EmulatorConfig,
    EmulatorProcess,
    FakeRunComfy,
    Faults,
    Fixed,
    JobPlan,
    LogNormal,
    ManualClock,
    Uniform,
    pytest_plugin,
    sample_image_data_uri,
    sample_jpeg,
    sample_png,
    submit_key,
)
from runcomfy_async.testing.__main__ import config_from_args
from runcomfy_async.testing._cmdline import fault_args
from runcomfy_async.testing._config import FaultName
from runcomfy_async.testing._faults import API_KINDS, FaultPicker, fault_applies
from runcomfy_async.testing._imagefile import ImageFacts, ImageFileError, read_image
from runcomfy_async.testing._samples import fake_mp4, fake_mp4_stream
from runcomfy_async.testing._sim import Job, Simulation
from runcomfy_async.testing._validate import check_seed_payload

SEED = "bytedance/dreamina-3-0/pro/image-to-video"
GENERIC = "acme/generic/text-to-video"
TOKEN = "test-token"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d")
DISCONNECTS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)

runcomfy_emulator = pytest_plugin.runcomfy_emulator
runcomfy_emulator_options = pytest_plugin.runcomfy_emulator_options


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)


@attrs.define
class Api:
    session: aiohttp.ClientSession
    base: str

    async def call(self, method, path, *, token=TOKEN, json_body=None, data=None, deadline=None):
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with self.session.request(
            method,
            self.base + path,
            headers=headers,
            json=json_body,
            data=data,
            timeout=aiohttp.ClientTimeout(total=deadline),
        ) as response:
            return Reply(response.status, dict(response.headers), await response.read())

    async def submit(self, payload=None, *, model=GENERIC, token=TOKEN):
        return await self.call("POST", f"/v1/models/{model}", token=token, json_body=payload or {})

    async def new_job(self, payload=None, *, model=GENERIC, token=TOKEN):
        reply = await self.submit(payload, model=model, token=token)
        assert 200 == reply.status, reply.body
        return reply.json["request_id"]

    async def status(self, request_id, *, token=TOKEN):
        return await self.call("GET", f"/v1/requests/{request_id}/status", token=token)

    async def result(self, request_id, *, token=TOKEN, query=""):
        path = f"/v1/requests/{request_id}/result{query}"
        return await self.call("GET", path, token=token)

    async def cancel(self, request_id, *, token=TOKEN):
        return await self.call("POST", f"/v1/requests/{request_id}/cancel", token=token)


@pytest.fixture
async def session():
    # A fresh connection per request: aiohttp silently re-sends a GET once
    # when a pooled connection drops, which would hide the emulator's drops.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture
async def start(session):
    """Start emulators with options; each is closed after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start_(**options):
            options.setdefault("clock", ManualClock())
            options.setdefault("run_time", Fixed(10))
            fake = await stack.enter_async_context(FakeRunComfy(**options))
            return fake, Api(session, fake.base_url)

        yield start_


def seed_payload(**changes):
    return {"prompt": "a cat surfing", "image_urls": [sample_image_data_uri()], **changes}


async def wait_until(condition):
    """Let the server run until ``condition()`` holds (the test timeout bounds it)."""
    while not condition():  # noqa: ASYNC110 - another party's state, over real sockets
        await asyncio.sleep(0.001)


@attrs.define
class Timer:
    when: float
    callback: typing.Callable[[], object]
    cancelled: bool = False

    def cancel(self):
        self.cancelled = True


@attrs.define
class TimerClock:
    """A clock with ``now()`` and ``call_at()``, moved by hand, timers and all."""

    time: float = 0.0
    timers: list[Timer] = attrs.Factory(list)

    def now(self):
        return self.time

    def call_at(self, when, callback):
        timer = Timer(when, callback)
        self.timers.append(timer)
        return timer

    @property
    def pending(self):
        return any(not t.cancelled for t in self.timers)

    def advance(self, seconds):
        self.time += seconds
        due = [t for t in self.timers if t.when <= self.time and not t.cancelled]
        self.timers = [t for t in self.timers if t not in due and not t.cancelled]
        for timer in due:
            timer.cancelled = True
            timer.callback()


# -- the four endpoints --------------------------------------------------------


async def test_submit_answers_absolute_urls_from_the_host(start):
    """Submit answers 200 with a uuid4 request id and the three absolute URLs."""
    fake, api = await start()
    reply = await api.submit({"prompt": "x"})
    body = reply.json
    rid = body["request_id"]
    base = f"{fake.base_url}/v1/requests/{rid}"
    assert 200 == reply.status
    assert 4 == uuid.UUID(rid).version
    assert {
        "request_id": rid,
        "status_url": f"{base}/status",
        "result_url": f"{base}/result",
        "cancel_url": f"{base}/cancel",
    } == body


async def test_seed_model_job_runs_to_completion(start):
    """A valid seed-model job goes in_progress, then completed and succeeded."""
    clock = ManualClock()
    fake, api = await start(clock=clock)
    rid = await api.new_job(seed_payload(), model=SEED)
    assert "in_progress" == (await api.status(rid)).json["status"]
    clock.advance(9.99)
    assert "in_progress" == (await api.status(rid)).json["status"]
    clock.advance(0.01)
    status = (await api.status(rid)).json
    assert {"request_id", "status", "status_url", "result_url"} == set(status)
    assert "completed" == status["status"]
    result = (await api.result(rid)).json
    assert "succeeded" == result["status"]
    assert SEED == result["model_id"]
    assert {"video": f"{fake.base_url}/_emulator/files/{rid}.mp4"} == result["output"]
    assert ISO.fullmatch(result["created_at"])
    assert ISO.fullmatch(result["finished_at"])
    assert "cost" not in result


async def test_result_of_unfinished_job_is_200_with_its_status(start):
    """Polling /result alone works: 200 with the current status, no output."""
    _, api = await start()
    rid = await api.new_job()
    reply = await api.result(rid)
    assert 200 == reply.status
    assert {"request_id", "status", "created_at", "model_id"} == set(reply.json)
    assert "in_progress" == reply.json["status"]


async def test_timestamps_follow_the_emulator_clock(start):
    """finished_at - created_at equals the run time on the emulator clock."""
    clock = ManualClock()
    _, api = await start(clock=clock, run_time=Fixed(42.5))
    rid = await api.new_job()
    clock.advance(100)
    result = (await api.result(rid)).json
    start_at = datetime.fromisoformat(result["created_at"])
    end_at = datetime.fromisoformat(result["finished_at"])
    assert 42.5 == pytest.approx((end_at - start_at).total_seconds())
    assert timedelta(0) == start_at.utcoffset()


@pytest.mark.parametrize(
    ("query", "expected"),
    [("?include_cost=true", 0.075), ("?include_cost=false", None), ("", None)],
    ids=["asked", "declined", "absent"],
)
async def test_include_cost_adds_the_cost(start, query, expected):
    """include_cost=true adds 0.0075 USD per nominal second, 4 places."""
    clock = ManualClock()
    _, api = await start(clock=clock)
    rid = await api.new_job()
    clock.advance(10)
    assert expected == (await api.result(rid, query=query)).json.get("cost")


async def test_videos_output_lists_two_urls(start):
    """output="videos" answers a list of URLs."""
    clock = ManualClock()
    fake, api = await start(clock=clock, output="videos")
    rid = await api.new_job()
    clock.advance(10)
    base = f"{fake.base_url}/_emulator/files/{rid}"
    expected = {"videos": [f"{base}.mp4", f"{base}-2.mp4"]}
    assert expected == (await api.result(rid)).json["output"]


async def test_output_file_is_served_without_auth_once_done(start):
    """The fake MP4 is served after success only; no token is needed or sent."""
    clock = ManualClock()
    fake, api = await start(clock=clock)
    rid = await api.new_job()
    path = f"/_emulator/files/{rid}.mp4"
    assert 404 == (await api.call("GET", path, token=None)).status
    clock.advance(10)
    reply = await api.call("GET", path, token=None)
    assert 200 == reply.status
    assert "video/mp4" == reply.headers["Content-Type"]
    assert b"ftyp" == reply.body[4:8]
    assert 200 < len(reply.body) < 1000
    files = [r for r in fake.requests if r.kind == "file"]
    assert 2 == len(files)
    assert all("authorization" not in r.headers for r in files)


@pytest.mark.parametrize(
    ("name", "mime"),
    [("640x480.png", "image/png"), ("800x600.jpg", "image/jpeg")],
    ids=["png", "jpg"],
)
async def test_sample_images_are_served(start, name, mime):
    """/_emulator/images/WxH.png|jpg serves an image of that size."""
    fake, api = await start()
    reply = await api.call("GET", f"/_emulator/images/{name}", token=None)
    info = inspect_image(reply.body)
    assert (200, mime) == (reply.status, reply.headers["Content-Type"])
    assert name.split(".")[0] == f"{info.width}x{info.height}"
    assert 1 == fake.count("image")


async def test_sample_image_can_be_padded_to_a_size(start):
    """?size=N pads the served image to exactly N bytes."""
    _, api = await start()
    reply = await api.call("GET", "/_emulator/images/640x480.png?size=5000", token=None)
    assert 5000 == len(reply.body)


# -- queue, cancel, failures -------------------------------------------------------


async def test_queue_positions_move_as_jobs_start_and_cancel(start):
    """With one slot, positions count jobs ahead and shrink as the queue moves."""
    clock = ManualClock()
    fake, api = await start(clock=clock, slots=1)
    ids = [await api.new_job() for _ in range(5)]

    async def positions():
        return [(await api.status(rid)).json.get("queue_position") for rid in ids]

    assert [None, 0, 1, 2, 3] == await positions()
    assert "cancelled" == (await api.cancel(ids[2])).json["outcome"]
    assert [None, 0, None, 1, 2] == await positions()
    clock.advance(10)
    assert [None, None, None, 0, 1] == await positions()
    assert 10 == fake.jobs[ids[1]].started
    clock.advance(25)
    assert [None, None, None, None, None] == await positions()
    assert 30 == fake.jobs[ids[4]].started
    expected = ["succeeded", "succeeded", "cancelled", "succeeded", "in_progress"]
    assert expected == [fake.jobs[rid].state for rid in ids]


async def test_accounts_have_their_own_slots(start):
    """Another account's jobs do not queue behind this account's."""
    _, api = await start(slots=1, other_tokens=("other",))
    await api.new_job()
    rid = await api.new_job(token="other")
    assert "in_progress" == (await api.status(rid, token="other")).json["status"]


@pytest.mark.parametrize(
    ("advance", "expected"),
    [
        (0, {"status": "in_progress", "outcome": "not_cancellable"}),
        (10, {"status": "completed", "outcome": "not_cancellable"}),
    ],
    ids=["running", "done"],
)
async def test_cancel_of_a_started_job_is_not_cancellable(start, advance, expected):
    """Cancel answers 202 not_cancellable; the job runs on."""
    clock = ManualClock()
    fake, api = await start(clock=clock)
    rid = await api.new_job()
    clock.advance(advance)
    reply = await api.cancel(rid)
    assert (202, {"request_id": rid, **expected}) == (reply.status, reply.json)
    assert not fake.jobs[rid].cancelled


async def test_cancel_of_a_queued_job_cancels_it(start):
    """A queued job is cancelled; /status and /result say so; repeating is safe."""
    fake, api = await start(slots=1)
    await api.new_job()
    rid = await api.new_job()
    reply = await api.cancel(rid)
    expected = {"request_id": rid, "status": "cancelled", "outcome": "cancelled"}
    assert (202, expected) == (reply.status, reply.json)
    assert "cancelled" == (await api.status(rid)).json["status"]
    result = (await api.result(rid)).json
    assert ("cancelled", True) == (result["status"], "finished_at" in result)
    assert expected == (await api.cancel(rid)).json
    assert fake.jobs[rid].cancelled


async def test_failed_job_shows_completed_on_status_and_failed_on_result(start):
    """By default a failed job is "completed" on /status, "failed" on /result."""
    clock = ManualClock()
    _, api = await start(clock=clock, failure_rate=1.0)
    rid = await api.new_job()
    clock.advance(10)
    assert "completed" == (await api.status(rid)).json["status"]
    result = (await api.result(rid)).json
    assert "failed" == result["status"]
    assert {"message": "content policy violation", "code": "E_MODEL"} == result["error"]
    assert "output" not in result


async def test_plan_hook_decides_each_job(start):
    """The plan hook sets run time, outcome and error per job."""

    def plan(model_id, payload):
        if payload.get("prompt") == "fail":
            return JobPlan(run_time=3, outcome="failed", error="boom")
        return None

    clock = ManualClock()
    fake, api = await start(clock=clock, plan=plan)
    failing = await api.new_job({"prompt": "fail"})
    normal = await api.new_job({"prompt": "fine"})
    clock.advance(3)
    assert ("failed", "boom") == (
        fake.jobs[failing].state,
        (await api.result(failing)).json["error"],
    )
    assert "in_progress" == fake.jobs[normal].state


async def test_outcomes_are_seeded(start):
    """The same seed gives the same run times and outcomes."""

    async def outcomes(seed):
        fake, api = await start(
            seed=seed, failure_rate=0.5, run_time=LogNormal(), clock=ManualClock()
        )
        ids = [await api.new_job() for _ in range(20)]
        return [(fake.jobs[i].outcome, fake.jobs[i].run_time) for i in ids]

    first = await outcomes(7)
    assert first == await outcomes(7)
    assert first != await outcomes(8)
    assert {"succeeded", "failed"} == {outcome for outcome, _ in first}


async def test_frames_241_doubles_the_drawn_run_time(start):
    """Ten-second videos take twice as long to render."""
    fake, api = await start(run_time=Fixed(30))
    short = await api.new_job(seed_payload(frames=121), model=SEED)
    long = await api.new_job(seed_payload(frames=241), model=SEED)
    assert (30, 60) == (fake.jobs[short].run_time, fake.jobs[long].run_time)


async def test_time_scale_shrinks_run_times(start):
    """A nominal 10 s job lasts 10 * time_scale on the clock."""
    clock = ManualClock()
    fake, api = await start(clock=clock, time_scale=0.01)
    rid = await api.new_job()
    clock.advance(0.1)
    assert ("succeeded", 10) == (fake.jobs[rid].state, fake.jobs[rid].run_time)


# -- drift switches ----------------------------------------------------------------


async def test_submit_202_switch(start):
    """submit_202 answers 202 with status in_queue in the body."""
    _, api = await start(faults=Faults(submit_202=True))
    reply = await api.submit()
    assert (202, "in_queue") == (reply.status, reply.json["status"])


async def test_failed_on_status_switch(start):
    """failed_on_status shows "failed" on /status."""
    clock = ManualClock()
    _, api = await start(clock=clock, failure_rate=1.0, faults=Faults(failed_on_status=True))
    rid = await api.new_job()
    clock.advance(10)
    assert "failed" == (await api.status(rid)).json["status"]


async def test_canceled_spelling_switch(start):
    """canceled_spelling says "canceled" in cancel, /status and /result."""
    _, api = await start(slots=1, faults=Faults(canceled_spelling=True))
    await api.new_job()
    rid = await api.new_job()
    cancel = (await api.cancel(rid)).json
    assert ("canceled", "canceled") == (cancel["status"], cancel["outcome"])
    assert "canceled" == (await api.status(rid)).json["status"]
    assert "canceled" == (await api.result(rid)).json["status"]


async def test_upper_case_status_switch(start):
    """upper_case_status sends states in upper case on both endpoints."""
    clock = ManualClock()
    _, api = await start(clock=clock, faults=Faults(upper_case_status=True))
    rid = await api.new_job()
    assert "IN_PROGRESS" == (await api.status(rid)).json["status"]
    clock.advance(10)
    assert "COMPLETED" == (await api.status(rid)).json["status"]
    assert "SUCCEEDED" == (await api.result(rid)).json["status"]


async def test_result_not_ready_switch(start):
    """result_not_ready answers 400 / 400005 until the job is done."""
    clock = ManualClock()
    _, api = await start(clock=clock, faults=Faults(result_not_ready=True))
    rid = await api.new_job()
    reply = await api.result(rid)
    assert (400, 400005) == (reply.status, reply.json["error_code"])
    clock.advance(10)
    assert 200 == (await api.result(rid)).status


async def test_errors_as_200_switch(start):
    """errors_as_200 sends errors as HTTP 200 with a non-null error_code."""
    _, api = await start(faults=Faults(errors_as_200=True))
    reply = await api.status(str(uuid.uuid4()))
    assert (200, 404001) == (reply.status, reply.json["error_code"])


async def test_status_completed_for_success_off(start):
    """With status_completed_for_success=False, /status says "succeeded"."""
    clock = ManualClock()
    _, api = await start(clock=clock, faults=Faults(status_completed_for_success=False))
    rid = await api.new_job()
    clock.advance(10)
    assert "succeeded" == (await api.status(rid)).json["status"]


# -- faults --------------------------------------------------------------------------


# Faults that leave a submit without an answer: what the client raises, and
# whether the job was created all the same. A hang is never answered: only
# the client's own deadline ends the wait.
UNANSWERED = {
    "drop_before": (DISCONNECTS, 0),
    "drop_after": (DISCONNECTS, 1),
    "malformed_http": (aiohttp.ClientResponseError, 1),
}
HANGS = {"hang": 0, "hang_after_accept": 1}


async def check_hang(fake, api, created):
    """A hung submit is in flight (with its job or not) until its client leaves."""
    jobs_before = len(fake.jobs)
    async with anyio.create_task_group() as group:
        group.start_soon(api.submit)
        await wait_until(lambda: fake.in_flight == 1 and len(fake.jobs) - jobs_before == created)
        group.cancel_scope.cancel()
    await wait_until(lambda: fake.in_flight == 0)
    assert created == len(fake.jobs) - jobs_before


async def check_fault(fake, api, fault):  # noqa: PLR0912 - one branch per fault
    """Send one submit that meets ``fault``; check the effect it must have."""
    jobs_before = len(fake.jobs)
    if fault in HANGS:
        await check_hang(fake, api, HANGS[fault])
        return
    if fault in UNANSWERED:
        error, created = UNANSWERED[fault]
        with pytest.raises(error):
            await api.submit()
        assert created == len(fake.jobs) - jobs_before
        return
    started = time.monotonic()
    reply = await api.submit()
    elapsed = time.monotonic() - started
    if fault == "server_error":
        assert (500, 500001) == (reply.status, reply.json["error_code"])
    elif fault == "unavailable":
        assert 503 == reply.status
        assert 0 == len(fake.jobs) - jobs_before
    elif fault == "html_error":
        assert 502 == reply.status
        assert reply.headers["Content-Type"].startswith("text/html")
        assert reply.body.startswith(b"<html>")
    elif fault == "slow":
        assert 200 == reply.status
        assert elapsed >= 0.01
    elif fault == "rate_limited":
        assert (429, "0.001") == (reply.status, reply.headers["Retry-After"])
    elif fault == "rate_limited_no_retry_after":
        assert (429, None) == (reply.status, reply.headers.get("Retry-After"))
    elif fault == "malformed":
        assert 200 == reply.status
        with contextlib.suppress(ValueError):
            assert "request_id" not in reply.json
        assert 1 == len(fake.jobs) - jobs_before
    elif fault == "error_200":
        assert (200, 500001) == (reply.status, reply.json["error_code"])
        assert 0 == len(fake.jobs) - jobs_before
    elif fault == "stray_429":
        assert (429, "1") == (reply.status, reply.headers["Retry-After"])
        assert 0 == len(fake.jobs) - jobs_before
    elif fault == "foreign_request_id":
        assert (200, "../../escaped") == (reply.status, reply.json["request_id"])
        assert 1 == len(fake.jobs) - jobs_before
    else:
        pytest.fail(f"no check written for fault {fault!r}")


# Every fault a submit can meet, so a new one is tested too; the others
# (unknown_status, empty_file_name) have their own tests.
SCRIPTED = [f for f in typing.get_args(FaultName) if fault_applies(f, "submit")]


@pytest.mark.parametrize("fault", SCRIPTED)
async def test_scripted_fault_hits_once(start, fault):
    """An injected fault hits the next request of its kind, then normal service."""
    fake, api = await start(time_scale=0.001, faults=Faults(slow_seconds=10), clock=time.monotonic)
    fake.inject("submit", fault)
    assert 1 == fake.pending_faults
    await check_fault(fake, api, fault)
    assert 0 == fake.pending_faults
    assert 200 == (await api.submit()).status


@pytest.mark.parametrize("fault", SCRIPTED)
async def test_probabilistic_fault_at_rate_one(start, fault):
    """A fault rate of 1 hits every API request."""
    faults = Faults(slow_seconds=10, **{f"{fault}_rate": 1.0})
    fake, api = await start(time_scale=0.001, faults=faults, clock=time.monotonic)
    await check_fault(fake, api, fault)
    await check_fault(fake, api, fault)


async def test_drops_on_a_pooled_connection(start):
    """On keep-alive, a dropped POST surfaces; aiohttp re-sends a dropped GET once."""
    fake, _ = await start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(fake.base_url, headers=headers) as pooled:
        async with pooled.post(f"/v1/models/{GENERIC}", json={}) as reply:
            rid = (await reply.json())["request_id"]
        fake.inject("submit", "drop_after")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await pooled.post(f"/v1/models/{GENERIC}", json={})
        async with pooled.get(f"/v1/requests/{rid}/status") as reply:
            assert 200 == reply.status
        fake.inject("status", "drop_before")
        async with pooled.get(f"/v1/requests/{rid}/status") as reply:
            assert 200 == reply.status
    assert (2, 3) == (len(fake.jobs), fake.count("status"))


async def test_malformed_alternates_between_not_json_and_missing_fields(start):
    """Malformed answers are not JSON, then JSON without the required fields."""
    fake, api = await start()
    fake.inject("any", "malformed", times=2)
    first, second = (await api.submit()).body, (await api.submit()).body
    with pytest.raises(ValueError):
        json.loads(first)
    assert "request_id" not in json.loads(second)


async def test_scripted_faults_are_served_in_order_and_by_kind(start):
    """Scripted faults go first come, first served, to matching kinds only."""
    fake, api = await start(faults=Faults(server_error_rate=0.0))
    rid = await api.new_job()
    fake.inject("status", "server_error", times=2)
    fake.inject("any", "html_error")
    assert 502 == (await api.result(rid)).status
    assert [500, 500, 200] == [(await api.status(rid)).status for _ in range(3)]
    assert 200 == (await api.result(rid)).status


async def test_scripted_faults_come_before_random_ones(start):
    """A scripted fault wins over a probabilistic one."""
    fake, api = await start(faults=Faults(server_error_rate=1.0))
    fake.inject("submit", "html_error")
    assert [502, 500] == [(await api.submit()).status for _ in range(2)]


@pytest.mark.parametrize(
    ("kind", "fault", "times"),
    [("job", "server_error", 1), ("status", "explode", 1), ("status", "slow", 0)],
    ids=["bad-kind", "bad-fault", "bad-times"],
)
async def test_inject_rejects_nonsense(start, kind, fault, times):
    """inject checks its arguments."""
    fake, _ = await start()
    with pytest.raises(ValueError):
        fake.inject(kind, fault, times)


@pytest.mark.parametrize(
    ("time_scale", "style", "check"),
    [
        (1.0, "seconds", lambda v: v == "1"),
        (0.01, "seconds", lambda v: v == "0.01"),
        (1.0, "date", lambda v: email.utils.parsedate_to_datetime(v) is not None),
        (1.0, "none", lambda v: v is None),
    ],
    ids=["whole-seconds", "scaled-seconds", "http-date", "none"],
)
async def test_retry_after_styles(start, time_scale, style, check):
    """429s carry Retry-After as seconds (scaled), an HTTP date, or not at all."""
    fake, api = await start(time_scale=time_scale, faults=Faults(retry_after=style))
    fake.inject("submit", "rate_limited")
    reply = await api.submit()
    assert 429 == reply.status
    assert check(reply.headers.get("Retry-After"))
    assert 1 == fake.rejected


@pytest.mark.parametrize(
    ("time_scale", "pattern"),
    [(1.0, r"[12]"), (0.5, r"[01]\.\d{1,3}|[12]")],
    ids=["whole", "milliseconds"],
)
async def test_hidden_rate_limit_answers_429(start, time_scale, pattern):
    """Over the hidden limit: 429 with the real wait until a token is free."""
    fake, api = await start(time_scale=time_scale, faults=Faults(rate_limit=0.5, rate_burst=2))
    statuses = [(await api.submit()).status for _ in range(2)]
    reply = await api.submit()
    assert [200, 200, 429] == [*statuses, reply.status]
    assert re.fullmatch(pattern, reply.headers["Retry-After"])
    assert 1.9 < float(reply.headers["Retry-After"]) <= 2
    assert (1, 2) == (fake.rejected, len(fake.jobs))


# -- hangs, held answers, faults for download safety -------------------------------


async def test_hang_ends_when_the_client_leaves(start):
    """A hung status request holds its handler only until the client gives up."""
    fake, api = await start()
    rid = await api.new_job()
    fake.inject("status", "hang")
    with pytest.raises(asyncio.TimeoutError):
        await api.call("GET", f"/v1/requests/{rid}/status", deadline=0.05)
    await wait_until(lambda: fake.in_flight == 0)
    assert 200 == (await api.status(rid)).status


async def test_hung_requests_end_when_the_emulator_closes(session):
    """Closing the emulator drops a hung request at once, with no client deadline."""
    fake = FakeRunComfy(clock=ManualClock())
    await fake.start()
    api = Api(session, fake.base_url)
    fake.inject("submit", "hang")

    async def submit():
        with pytest.raises(DISCONNECTS):
            await api.submit()

    async with anyio.create_task_group() as group:
        group.start_soon(submit)
        await wait_until(lambda: fake.in_flight == 1)
        await fake.close()
    assert 0 == len(fake.jobs)


async def test_submit_delay_holds_the_answer_on_the_clock(start):
    """An accepted submit is billed at once; its answer waits submit_delay on the clock."""
    clock = TimerClock()
    fake, api = await start(clock=clock, balance=1.0, faults=Faults(submit_delay=30))
    replies = []

    async def submit():
        replies.append(await api.submit({"prompt": "held"}))

    async with anyio.create_task_group() as group:
        group.start_soon(submit)
        await wait_until(lambda: clock.pending)
        (rid,) = fake.jobs
        assert ([], 1, 0.925) == (replies, fake.in_flight, pytest.approx(fake.balance))
        assert {submit_key(GENERIC, {"prompt": "held"}): 1} == fake.accepted_submits()
        clock.advance(29.9)
        assert [] == replies
        clock.advance(0.1)
    assert (200, rid) == (replies[0].status, replies[0].json["request_id"])


async def test_submit_delay_window_leaves_a_job_the_client_never_heard_of(start):
    """A client gone while the answer is held leaves a billed job, and no handler."""
    fake, api = await start(faults=Faults(submit_delay=1000), clock=time.monotonic)
    async with anyio.create_task_group() as group:
        group.start_soon(api.submit)
        await wait_until(lambda: len(fake.jobs) == 1)
        group.cancel_scope.cancel()
    await wait_until(lambda: fake.in_flight == 0)
    (view,) = fake.jobs.values()
    assert ({view.submit_key: 1}, None) == (fake.accepted_submits(), view.submit_fault)


async def test_submit_delay_in_real_time_is_scaled(start):
    """Without clock timers, submit_delay is real seconds times time_scale."""
    fake, api = await start(faults=Faults(submit_delay=5), time_scale=0.001, clock=time.monotonic)
    assert (200, 1) == ((await api.submit()).status, len(fake.jobs))


async def test_stray_429_says_retry_after_1_whatever_the_settings(start):
    """stray_429 sends a literal Retry-After: 1, not scaled, not a date; nothing done."""
    faults = Faults(stray_429_rate=1.0, retry_after="date")
    fake, api = await start(faults=faults, time_scale=0.001)
    reply = await api.submit()
    assert (429, "1", 0, 1) == (
        reply.status,
        reply.headers["Retry-After"],
        len(fake.jobs),
        fake.rejected,
    )


@pytest.mark.parametrize("endpoint", ["status", "result", "cancel"])
async def test_foreign_request_id(start, endpoint):
    """foreign_request_id answers with another request_id, once."""
    fake, api = await start(faults=Faults(foreign_id="../../x"))
    rid = await api.new_job()
    fake.inject(endpoint, "foreign_request_id")
    first, second = [(await getattr(api, endpoint)(rid)).json for _ in range(2)]
    assert ("../../x", rid) == (first["request_id"], second["request_id"])
    assert first["status"] == second["status"]


@pytest.mark.parametrize("output", ["video", "videos"])
async def test_empty_file_name_outputs_are_still_served(start, session, output):
    """empty_file_name gives URLs whose last segment is only '?'; they serve the video."""
    clock = ManualClock()
    fake, api = await start(clock=clock, output=output)
    rid = await api.new_job()
    clock.advance(10)
    fake.inject("result", "empty_file_name")
    answer = (await api.result(rid)).json["output"]
    urls = [answer["video"]] if output == "video" else answer["videos"]
    for url in urls:
        directory, _, name = urlsplit(url).path.rpartition("/")
        assert ({"?"}, f"/_emulator/files/{rid}") == (set(unquote(name)), directory)
        async with session.get(url) as reply:
            assert (200, b"ftyp") == (reply.status, (await reply.read())[4:8])
    assert len(urls) == len(set(urls))
    assert f"{rid}.mp4" in (await api.result(rid)).json["output"].get("video", f"{rid}.mp4")


async def test_unknown_status_shows_on_status_and_result_only(start):
    """unknown_status says 'paused' on /status and /result; an 'any' fault waits for one."""
    fake, api = await start()
    rid = await api.new_job()
    fake.inject("any", "unknown_status", times=2)
    assert 200 == (await api.submit()).status
    assert 202 == (await api.cancel(rid)).status
    assert ("paused", "paused", "in_progress") == (
        (await api.status(rid)).json["status"],
        (await api.result(rid)).json["status"],
        (await api.status(rid)).json["status"],
    )
    with pytest.raises(ValueError, match="cannot show"):
        fake.inject("submit", "unknown_status")


async def test_slow_file_paces_the_output_on_the_clock(start, session):
    """slow_file=100 sends 5 bytes per 0.05 s of clock: the file needs len/5 clock steps."""
    clock = TimerClock()
    fake, api = await start(clock=clock, faults=Faults(slow_file=100))
    rid = await api.new_job()
    clock.advance(10)
    body, steps = [], 0

    async def download():
        async with session.get(f"{fake.base_url}/_emulator/files/{rid}.mp4") as reply:
            body.append(await reply.read())

    async with anyio.create_task_group() as group:
        group.start_soon(download)
        while True:
            await wait_until(lambda: clock.pending or body)
            if body:
                break
            clock.advance(0.05)
            steps += 1
    expected = fake_mp4(f"{rid}.mp4")
    assert (expected, math.ceil(len(expected) / 5)) == (body[0], steps)


async def test_slow_file_in_real_time_is_whole(start, session):
    """A fast slow_file on the real clock still sends the exact file."""
    clock = ManualClock()
    fake, api = await start(clock=clock, faults=Faults(slow_file=50_000), time_scale=0.01)
    rid = await api.new_job()
    clock.advance(1)
    async with session.get(f"{fake.base_url}/_emulator/files/{rid}.mp4") as reply:
        assert fake_mp4(f"{rid}.mp4") == await reply.read()


async def test_big_file_streams_exactly_n_bytes(start, session):
    """big_file serves an MP4 of exactly N bytes: ftyp, then an mdat box of the rest."""
    size = 3_000_000
    clock = ManualClock()
    fake, api = await start(clock=clock, faults=Faults(big_file=size))
    rid = await api.new_job()
    clock.advance(10)
    async with session.get(f"{fake.base_url}/_emulator/files/{rid}.mp4") as reply:
        head = await reply.content.readexactly(36)
        rest = sum([len(chunk) async for chunk in reply.content.iter_chunked(2**16)])
        assert size == reply.content_length
    assert (b"ftyp", size) == (head[4:8], 36 + rest)
    assert (size - 28, b"mdat") == struct.unpack(">I4s", head[28:36])


def test_fake_mp4_stream_is_lazy_and_exact():
    """The big-file generator yields pieces as it goes, any size, 64-bit box past 4 GiB."""
    huge = fake_mp4_stream(2**33, piece=1024)
    first = next(huge)
    assert (1024, (1, b"mdat", 2**33 - 28)) == (len(first), struct.unpack(">I4sQ", first[28:44]))
    assert [3, 100_000] == [sum(map(len, fake_mp4_stream(n, piece=4096))) for n in (3, 100_000)]


# -- every fault at once, accepted submits ------------------------------------------


def test_chaos_spreads_its_rate_over_every_fault():
    """Faults.chaos splits a total rate evenly, minus exclusions, keeping other switches."""
    faults = Faults.chaos(0.32, exclude=["hang"], base=Faults(slow_seconds=1, hang_rate=0.5))
    rates = dict(faults.rates())
    others = {round(rate, 12) for name, rate in rates.items() if name != "hang"}
    assert (0.0, {0.02}, 1) == (rates["hang"], others, faults.slow_seconds)
    assert set(typing.get_args(FaultName)) == set(rates)


def test_chaos_picks_only_faults_a_request_can_show():
    """At rate 1, results meet every fault every time; submits never meet result-only ones."""
    picker = FaultPicker(Faults.chaos(1.0), random.Random(1))
    seen = {kind: Counter(picker.pick(kind) for _ in range(4000)) for kind in API_KINDS}
    every = set(typing.get_args(FaultName))
    assert every == set(seen["result"])
    assert every - {"unknown_status", "empty_file_name"} | {None} == set(seen["submit"])
    assert every - {"empty_file_name"} | {None} == set(seen["status"])


async def test_chaos_run_counts_every_accepted_submit(start):
    """Under chaos, each job is one accepted submit; lost answers are marked on the job."""
    chaos = Faults.chaos(0.7, exclude=["hang", "hang_after_accept", "slow"])
    fake, api = await start(faults=chaos, seed=3)

    async def answered(n):
        try:
            reply = await api.submit({"prompt": "chaos", "seed": n})
        except aiohttp.ClientError:
            return False
        return reply.status == 200 and "request_id" in reply.body.decode()

    failed = [not await answered(n) for n in range(60)].count(True)
    accepted = fake.accepted_submits()
    lost = [v for v in fake.jobs.values() if v.submit_fault is not None]
    assert len(fake.jobs) == sum(accepted.values())
    assert {1} == set(accepted.values())
    assert 0 < len(lost) <= failed < 60
    assert {submit_key(GENERIC, v.payload) for v in fake.jobs.values()} == set(accepted)


async def test_accepted_submits_count_jobs_by_what_they_ask(start):
    """Same model and payload, any key order: one key; rejected submits do not count."""
    fake, api = await start()
    await api.new_job({"prompt": "p", "seed": 1})
    fake.inject("submit", "drop_after")
    with pytest.raises(DISCONNECTS):
        await api.submit({"seed": 1, "prompt": "p"})
    assert 422 == (await api.submit({"prompt": "p"}, model=SEED)).status
    fake.inject("submit", "unavailable")
    assert 503 == (await api.submit({"prompt": "q"})).status
    key = submit_key(GENERIC, {"prompt": "p", "seed": 1})
    assert {key: 2} == fake.accepted_submits()
    assert [(key, None), (key, "drop_after")] == [
        (v.submit_key, v.submit_fault) for v in fake.jobs.values()
    ]
    admin = await api.call("GET", "/_emulator/accepted-submits", token=None)
    assert {key: 2} == admin.json


def test_submit_key_ignores_key_order_and_names_the_model():
    """submit_key is canonical over the payload and depends on the model."""
    assert submit_key("m", {"a": 1, "b": [2]}) == submit_key("m", {"b": [2], "a": 1})
    assert submit_key("m", {"a": 1}) != submit_key("n", {"a": 1})
    assert re.fullmatch(r"[0-9a-f]{64}", submit_key("m", {}))


@pytest.mark.parametrize(
    "order",
    [
        {"kind": "job", "fault": "hang"},
        {"kind": "submit", "fault": "explode"},
        {"kind": "submit", "fault": "hang", "times": 0},
        {"kind": "submit", "fault": "hang", "times": True},
        {"kind": "submit", "fault": "empty_file_name"},
        {"fault": "hang"},
        [1],
    ],
    ids=["bad-kind", "bad-fault", "times-0", "times-bool", "cannot-show", "no-kind", "list"],
)
async def test_inject_admin_endpoint_refuses_nonsense(start, order):
    """POST /_emulator/inject answers 400 to a bad order, and scripts nothing."""
    fake, api = await start()
    reply = await api.call("POST", "/_emulator/inject", token=None, json_body=order)
    assert (400, 0) == (reply.status, fake.pending_faults)


async def test_inject_admin_endpoint_scripts_faults(start):
    """POST /_emulator/inject scripts faults from another process."""
    _, api = await start()
    order = {"kind": "submit", "fault": "stray_429", "times": 2}
    reply = await api.call("POST", "/_emulator/inject", token=None, json_body=order)
    assert (200, {"pending_faults": 2}) == (reply.status, reply.json)
    assert [429, 429, 200] == [(await api.submit()).status for _ in range(3)]


# -- clocks --------------------------------------------------------------------------


async def test_clock_object_with_now_drives_jobs(start):
    """clock= takes an object with a now() method, like runcomfy_async's VirtualClock."""

    @attrs.define
    class NowClock:
        t: float = 0.0

        def now(self):
            return self.t

    clock = NowClock()
    fake, api = await start(clock=clock)
    rid = await api.new_job()
    clock.t = 10
    assert ("succeeded", 0, 10) == (
        fake.jobs[rid].state,
        fake.jobs[rid].created,
        fake.jobs[rid].finished,
    )


async def test_virtual_clock_drives_jobs_and_held_answers(start):
    """The client's VirtualClock drives the emulator's jobs and its submit_delay."""
    clock_module = pytest.importorskip("runcomfy_async._clock")
    clock = clock_module.VirtualClock()
    fake, api = await start(clock=clock, faults=Faults(submit_delay=30))
    replies = []

    async def submit():
        replies.append(await api.submit())

    async with anyio.create_task_group() as group:
        group.start_soon(submit)
        await wait_until(lambda: len(fake.jobs) == 1)
        await clock.advance(30)
    (rid,) = fake.jobs
    assert (200, "succeeded") == (replies[0].status, fake.jobs[rid].state)


def test_a_clock_must_be_callable_or_have_now():
    """Anything else is refused at once."""
    with pytest.raises(TypeError):
        FakeRunComfy(clock=42)


# -- the emulator's own image checks --------------------------------------------------


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(width=400, height=400, *, colour=0, depth=8, chunks=None, raw=None, interlace=0):
    """A PNG built chunk by chunk, so a test can damage any part of it."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    if raw is None:
        raw = bytes(1 + (width * depth + 7) // 8) * height
    if chunks is None:
        chunks = [(b"IDAT", zlib.compress(raw))]
    body = b"".join(png_chunk(kind, data) for kind, data in [(b"IHDR", ihdr), *chunks])
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def adam7_raw(width, height, bytes_per_pixel):
    """Zeroed scanlines of every Adam7 pass, each with its filter byte."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    passes.append((0, 1, 1, 2))
    raw = b""
    for x0, y0, dx, dy in passes:
        w, h = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if w and h:
            raw += bytes(1 + w * bytes_per_pixel) * h
    return raw


def pillow(fmt, mode, size=(64, 48), **options):
    image_module = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    image_module.new(mode, size).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("PNG", "1", {}),
        ("PNG", "L", {}),
        ("PNG", "P", {}),
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "I;16", {}),
        ("JPEG", "L", {}),
        ("JPEG", "RGB", {}),
        ("JPEG", "RGB", {"progressive": True}),
        ("JPEG", "RGB", {"optimize": True, "quality": 95}),
        ("JPEG", "CMYK", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(v) or "-",
)
def test_read_image_takes_what_pillow_writes(fmt, mode, options):
    """A real encoder's files pass: the right kind and size."""
    data = pillow(fmt, mode, **options)
    assert ImageFacts(fmt.lower(), 64, 48, len(data)) == read_image(data)


def test_read_image_takes_an_interlaced_png_that_pillow_reads():
    """Adam7 data is counted pass by pass."""
    data = make_png(13, 7, colour=2, raw=adam7_raw(13, 7, 3), interlace=1)
    image_module = pytest.importorskip("PIL.Image")
    image_module.open(io.BytesIO(data)).load()
    assert (13, 7) == (read_image(data).width, read_image(data).height)


@pytest.mark.parametrize(
    "data",
    [make_png(40, 30), pillow("PNG", "RGB", (40, 30)), sample_jpeg(40, 30)],
    ids=["png", "pillow-png", "jpeg"],
)
def test_every_truncation_is_rejected(data):
    """Cut anywhere, a PNG misses its IEND and a JPEG its EOI: never decodable."""
    read_image(data)
    kinds = set()
    for cut in range(len(data)):
        with pytest.raises(ImageFileError) as info:
            read_image(data[:cut])
        kinds.add(info.value.kind)
    assert {"type", "corrupt"} == kinds


@pytest.mark.parametrize(
    "data",
    [
        make_png(chunks=[(b"IDAT", b"\x00" * 50)]),
        make_png(chunks=[(b"IDAT", zlib.compress(bytes(401 * 400))[:-10])]),
        make_png(chunks=[(b"IDAT", zlib.compress(bytes(401 * 399)))]),
        make_png(raw=b"\x07" + bytes(400) + bytes(401 * 399)),
        make_png()[:29] + bytes([make_png()[29] ^ 0xFF]) + make_png()[30:],
        make_png()[:-12],
        make_png(colour=3),
        make_png(chunks=[(b"IDAT", b"x\x9c"), (b"tEXt", b"a\x00b"), (b"IDAT", b"\x03\x00")]),
        make_png(colour=2, depth=4),
        make_png(chunks=[]),
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IEND", b""),
    ],
    ids=[
        "idat-not-zlib",
        "zlib-cut",
        "too-few-rows",
        "bad-filter",
        "ihdr-crc",
        "no-iend",
        "no-palette",
        "idat-split",
        "bad-depth",
        "no-idat",
        "no-ihdr",
    ],
)
def test_damaged_pngs_are_corrupt(data):
    """PNGs no decoder could read are 'corrupt', not images."""
    with pytest.raises(ImageFileError) as info:
        read_image(data)
    assert "corrupt" == info.value.kind


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (sample_jpeg(400, 400)[:-2], "corrupt"),
        (sample_jpeg(400, 400).replace(b"\xff\xc0", b"\xff\xe1"), "corrupt"),
        (sample_jpeg(400, 400).replace(struct.pack(">HH", 400, 400), bytes(4)), "corrupt"),
        (sample_jpeg(400, 400)[:-2] + b"\xff\xd8\xff\xd9", "corrupt"),
        (b"GIF89a" + bytes(100), "type"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "type"),
    ],
    ids=["no-eoi", "no-sof", "zero-size", "second-soi", "gif", "webp"],
)
def test_damaged_or_foreign_files_are_refused(data, kind):
    """A JPEG without EOI or SOF is corrupt; GIF and WebP are the wrong type."""
    with pytest.raises(ImageFileError) as info:
        read_image(data)
    assert kind == info.value.kind


def bad_crc(chunk):
    return chunk[:-1] + bytes([chunk[-1] ^ 0xFF])


@pytest.mark.parametrize(
    "data",
    [
        make_png() + b"trailing",
        sample_jpeg(400, 400) + b"trailing",
        make_png()[:-12] + bad_crc(png_chunk(b"tEXt", b"k\x00v")) + png_chunk(b"IEND", b""),
    ],
    ids=["png-trailing", "jpeg-trailing", "ancillary-crc"],
)
def test_what_decoders_ignore_is_ignored(data):
    """Bytes after the end, and a bad CRC on an ancillary chunk, are tolerated."""
    assert 400 == read_image(data).width


def data_uri(data, mime="image/png"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def no_fetch(url):
    raise AssertionError(url)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        (data_uri(sample_png(321, 321)), None),
        (data_uri(sample_png(4096, 4096)), None),
        (data_uri(sample_png(962, 321)), None),
        (data_uri(sample_png(640, 480, size=4_699_999)), None),
        (data_uri(sample_jpeg(640, 480), "image/jpg"), None),
        (data_uri(sample_png(320, 400)), "dimensions"),
        (data_uri(sample_png(4097, 2000)), "dimensions"),
        (data_uri(sample_png(963, 321)), "ratio"),
        (data_uri(sample_jpeg(321, 963), "image/jpeg"), "ratio"),
        (data_uri(sample_png(640, 480, size=4_700_000)), "size"),
        (data_uri(sample_png(640, 480), "image/jpeg"), "type"),
        (data_uri(b"GIF89a" + bytes(40), "image/gif"), "type"),
        (data_uri(b"GIF89a" + bytes(40)), "type"),
        (data_uri(sample_png(640, 480)[:-12]), "image_corrupt"),
        (data_uri(sample_jpeg(640, 480)[:-2], "image/jpeg"), "image_corrupt"),
        ("data:image/png;base64," + "A" * 5, "data_uri"),
        ("data:image/png;base64,", "data_uri"),
        ("data:image/png," + "A" * 8, "data_uri"),
    ],
    ids=[
        "321-square",
        "4096-square",
        "ratio-2.997",
        "4699999-bytes",
        "jpg-mime",
        "side-320",
        "side-4097",
        "ratio-3",
        "ratio-1/3",
        "4700000-bytes",
        "declared-jpeg",
        "gif",
        "gif-as-png",
        "png-no-iend",
        "jpeg-no-eoi",
        "bad-base64",
        "empty",
        "not-base64",
    ],
)
async def test_image_rules_at_their_boundaries(uri, problem):
    """Under 4,700,000 bytes, sides in (320, 4096], long side under 3x, whole files."""
    problems = await check_seed_payload({"prompt": "p", "image_urls": [uri]}, no_fetch)
    assert ([] if problem is None else [problem]) == [p["type"] for p in problems]


def test_the_emulator_uses_only_the_clients_public_api():
    """No module of runcomfy_async.testing imports the client's private modules."""
    package = Path(runcomfy_async.testing.__file__).parent
    for path in sorted(package.glob("*.py")):
        source = path.read_text()
        assert "runcomfy_async._" not in source, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, (path.name, node.module)
                module = node.module or ""
                private = module.startswith("runcomfy_async.") and not module.startswith(
                    "runcomfy_async.testing"
                )
                assert not private, (path.name, module)


# -- errors --------------------------------------------------------------------------


def detail_of(reply):
    return [(tuple(d["loc"]), d["type"]) for d in reply.json["detail"]]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"prompt": None}, [(("body", "prompt"), "missing")]),
        ({"prompt": ""}, [(("body", "prompt"), "string_too_short")]),
        ({"prompt": "x" * 801}, [(("body", "prompt"), "string_too_long")]),
        ({"prompt": 5}, [(("body", "prompt"), "string_type")]),
        ({"image_urls": None}, [(("body", "image_urls"), "missing")]),
        ({"image_urls": []}, [(("body", "image_urls"), "too_short")]),
        ({"image_urls": ["https://a/1.png"] * 2}, [(("body", "image_urls"), "too_long")]),
        ({"image_urls": "https://a/1.png"}, [(("body", "image_urls"), "list_type")]),
        ({"image_urls": [7]}, [(("body", "image_urls", 0), "string_type")]),
        (
            {"image_urls": ["http://example.com/a.png"]},
            [(("body", "image_urls", 0), "url_scheme")],
        ),
        ({"image_urls": ["ftp://x/a.png"]}, [(("body", "image_urls", 0), "url_scheme")]),
        (
            {"image_urls": ["data:image/png;base64,@@"]},
            [(("body", "image_urls", 0), "data_uri")],
        ),
        (
            {"image_urls": [sample_image_data_uri(300, 300)]},
            [(("body", "image_urls", 0), "dimensions")],
        ),
        (
            {"image_urls": [sample_image_data_uri(1200, 400, kind="jpeg")]},
            [(("body", "image_urls", 0), "ratio")],
        ),
        ({"seed": True}, [(("body", "seed"), "int_type")]),
        ({"seed": "1"}, [(("body", "seed"), "int_type")]),
        ({"frames": 120}, [(("body", "frames"), "literal_error")]),
        ({"frames": 121.0}, [(("body", "frames"), "literal_error")]),
        ({"duration": 5}, [(("body", "duration"), "extra_forbidden")]),
        (
            {"prompt": None, "frames": 1, "zzz": 1},
            [
                (("body", "zzz"), "extra_forbidden"),
                (("body", "prompt"), "missing"),
                (("body", "frames"), "literal_error"),
            ],
        ),
    ],
    ids=[
        "prompt-missing",
        "prompt-empty",
        "prompt-801",
        "prompt-int",
        "images-missing",
        "images-empty",
        "images-two",
        "images-not-list",
        "image-not-string",
        "image-http",
        "image-ftp",
        "data-uri-bad",
        "data-uri-small",
        "data-uri-ratio",
        "seed-bool",
        "seed-str",
        "frames-120",
        "frames-float",
        "extra-key",
        "several",
    ],
)
async def test_seed_model_validation_lists_every_bad_field(start, changes, expected):
    """Invalid seed-model input answers 422 / 422001 with one detail per field."""
    fake, api = await start()
    payload = {k: v for k, v in seed_payload(**changes).items() if v is not None}
    reply = await api.submit(payload, model=SEED)
    assert (422, 422001) == (reply.status, reply.json["error_code"])
    assert expected == detail_of(reply)
    assert 0 == len(fake.jobs)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://cdn.example.com/cat.png", True),
        (sample_image_data_uri(641, 480, kind="jpeg"), True),
        ("{base}/_emulator/images/640x480.png", True),
        ("{base}/_emulator/images/640x480.jpg", True),
        ("{base}/_emulator/images/320x480.png", False),
        ("{base}/_emulator/images/640x480.png?size=4700000", False),
        ("{base}/_emulator/images/missing.png", False),
    ],
    ids=["https", "data-uri", "loopback-png", "loopback-jpg", "small", "big", "404"],
)
async def test_image_urls_accepted_or_fetched_from_loopback(start, url, ok):
    """https URLs pass unfetched; loopback URLs are fetched, without a token."""
    fake, api = await start()
    payload = seed_payload(image_urls=[url.format(base=fake.base_url)])
    reply = await api.submit(payload, model=SEED)
    assert (200 if ok else 422) == reply.status
    images = [r for r in fake.requests if r.kind == "image"]
    assert ("{base}" in url) == bool(images)
    assert all("authorization" not in r.headers for r in images)


async def test_prompt_of_800_characters_is_fine(start):
    """The prompt limit is inclusive."""
    _, api = await start()
    assert 200 == (await api.submit(seed_payload(prompt="x" * 800), model=SEED)).status


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (SEED, b"{not json"),
        (SEED, b"[1, 2]"),
        (GENERIC, b""),
        (GENERIC, b'"text"'),
    ],
    ids=["seed-garbage", "seed-list", "generic-empty", "generic-string"],
)
async def test_body_must_be_a_json_object(start, model, data):
    """A body that is not a JSON object answers 422."""
    _, api = await start()
    reply = await api.call("POST", f"/v1/models/{model}", data=data)
    assert (422, 422001) == (reply.status, reply.json["error_code"])


async def test_generic_model_accepts_any_object(start):
    """The generic model takes any JSON object."""
    fake, api = await start()
    rid = await api.new_job({"anything": [1, {"goes": True}]})
    assert {"anything": [1, {"goes": True}]} == fake.jobs[rid].payload


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", "Basic test-token", "test-token", "Bearer"],
    ids=["missing", "wrong-token", "wrong-scheme", "no-scheme", "empty"],
)
async def test_bad_auth_answers_401(start, session, header):
    """A missing or invalid bearer token answers 401 / 401001."""
    fake, _ = await start()
    headers = {} if header is None else {"Authorization": header}
    url = f"{fake.base_url}/v1/models/{GENERIC}"
    async with session.post(url, json={}, headers=headers) as response:
        body = await response.json()
    assert (401, 401001) == (response.status, body["error_code"])
    assert {"error_code", "error_message", "detail"} == set(body)


@pytest.mark.parametrize("endpoint", ["status", "result", "cancel"])
async def test_other_accounts_job_answers_403(start, endpoint):
    """A job read with another account's token answers 403 / 403001."""
    _, api = await start(other_tokens=("other-token",))
    rid = await api.new_job()
    reply = await getattr(api, endpoint)(rid, token="other-token")
    assert (403, 403001) == (reply.status, reply.json["error_code"])


@pytest.mark.parametrize("endpoint", ["status", "result", "cancel"])
async def test_unknown_request_id_answers_404(start, endpoint):
    """An unknown request id answers 404 / 404001."""
    _, api = await start()
    reply = await getattr(api, endpoint)(str(uuid.uuid4()))
    assert (404, 404001) == (reply.status, reply.json["error_code"])


async def test_unknown_model_answers_404_400001(start):
    """An unknown model answers 404 with error_code 400001."""
    _, api = await start()
    reply = await api.submit(model="acme/nope")
    assert (404, 400001) == (reply.status, reply.json["error_code"])


async def test_balance_runs_out_with_402(start):
    """Each submit costs its job; a submit that would overdraw answers 402."""
    fake, api = await start(balance=0.2, slots=1)
    first, second = await api.new_job(), await api.new_job()
    reply = await api.submit()
    assert (402, 400002) == (reply.status, reply.json["error_code"])
    assert 0.05 == pytest.approx(fake.balance)
    await api.cancel(second)
    assert 0.125 == pytest.approx(fake.balance)
    assert first in fake.jobs


async def test_unknown_route_is_recorded_and_404(start):
    """Paths outside the API answer 404 and are recorded as "unknown"."""
    fake, api = await start()
    reply = await api.call("GET", "/v1/models/x")
    assert (404, 1) == (reply.status, fake.count("unknown"))


# -- recording, admin ----------------------------------------------------------------


async def test_requests_are_recorded_with_headers_and_bodies(start):
    """Every request is recorded: kind, method, path, query, headers, body, time."""
    clock = ManualClock(now=5)
    fake, api = await start(clock=clock)
    rid = await api.new_job({"prompt": "x"})
    await api.result(rid, query="?include_cost=true")
    submit, result = fake.requests
    assert ("submit", "POST", f"/v1/models/{GENERIC}") == (
        submit.kind,
        submit.method,
        submit.path,
    )
    assert {"prompt": "x"} == json.loads(submit.body)
    assert f"Bearer {TOKEN}" == submit.headers["authorization"]
    assert ({"include_cost": "true"}, None, 5) == (result.query, result.body, result.time)
    assert (1, 1, 2) == (fake.count("submit"), fake.count("result"), fake.count())


@pytest.mark.parametrize(
    ("options", "recorded", "body"),
    [({"record_bodies": False}, 1, None), ({"record": False}, 0, None)],
    ids=["no-bodies", "nothing"],
)
async def test_recording_can_be_turned_down(start, options, recorded, body):
    """record_bodies=False drops bodies; record=False keeps only counts."""
    fake, api = await start(**options)
    await api.new_job({"prompt": "x"})
    assert (recorded, 1) == (len(fake.requests), fake.count("submit"))
    if recorded:
        assert body == fake.requests[0].body


async def test_peak_concurrency_counts_overlapping_requests(start):
    """peak_concurrency is the most API requests handled at once."""
    fake, api = await start(latency=20, time_scale=0.001, clock=time.monotonic)
    await asyncio.gather(*(api.submit() for _ in range(5)))
    assert 5 == fake.peak_concurrency
    assert 0 == fake.in_flight


async def test_admin_endpoints(start):
    """/_emulator/stats, /jobs and /reset-stats work without auth."""
    clock = ManualClock()
    fake, api = await start(clock=clock, slots=1)
    first, second = await api.new_job(), await api.new_job()
    fake.inject("status", "rate_limited")
    await api.status(first)
    stats = (await api.call("GET", "/_emulator/stats", token=None)).json
    assert {"submit": 2, "status": 1, "admin": 1} == stats["requests"]
    assert (1, 2) == (stats["rejected"], stats["total_jobs"])
    assert 1 == stats["jobs"]["in_queue"] == stats["jobs"]["in_progress"]
    clock.advance(10)
    jobs = (await api.call("GET", "/_emulator/jobs", token=None)).json
    expected = [
        {
            "request_id": first,
            "state": "succeeded",
            "outcome": "succeeded",
            "created": 0,
            "started": 0,
            "finished": 10,
        },
        {
            "request_id": second,
            "state": "in_progress",
            "outcome": "succeeded",
            "created": 0,
            "started": 10,
            "finished": None,
        },
    ]
    assert expected == jobs
    assert 200 == (await api.call("POST", "/_emulator/reset-stats", token=None)).status
    stats = (await api.call("GET", "/_emulator/stats", token=None)).json
    assert ({"admin": 1}, 0) == (stats["requests"], stats["rejected"])


async def test_job_view_is_a_snapshot(start):
    """fake.jobs maps request ids to read-only snapshots."""
    fake, api = await start(slots=1)
    await api.new_job()
    rid = await api.new_job({"prompt": "p"})
    view = fake.jobs[rid]
    assert (2, True) == (len(fake.jobs), rid in list(fake.jobs))
    assert ("in_queue", 0, GENERIC, TOKEN) == (
        view.state,
        view.queue_position,
        view.model_id,
        view.token,
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        view.state = "succeeded"  # type: ignore[misc]


# -- lifecycle, config, process, plugin ----------------------------------------------


async def test_config_object_and_keywords_combine():
    """config= and keywords merge, keywords winning."""
    fake = FakeRunComfy(config=EmulatorConfig(slots=2, token="a"), token="b")
    assert (2, "b") == (fake.config.slots, fake.config.token)
    await fake.close()


def test_base_url_needs_start():
    """base_url is only known once the server listens."""
    with pytest.raises(RuntimeError):
        _ = FakeRunComfy().base_url


async def test_an_emulator_starts_once():
    """A closed emulator cannot be started again."""
    fake = FakeRunComfy()
    await fake.start()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", fake.base_url)
    await fake.close()
    await fake.close()
    with pytest.raises(RuntimeError):
        await fake.start()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Faults(server_error_rate=0.6, drop_before_rate=0.6),
        lambda: Faults(slow_rate=1.5),
        lambda: EmulatorConfig(time_scale=0),
        lambda: EmulatorConfig(slots=0),
        lambda: Uniform(5, 1),
        lambda: ManualClock().advance(-1),
    ],
    ids=["rates-over-1", "rate-over-1", "time-scale-0", "slots-0", "uniform", "clock"],
)
def test_settings_are_checked(make):
    """Impossible settings raise ValueError."""
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    ("dist", "low", "high"),
    [(Fixed(7), 7, 7), (Uniform(2, 4), 2, 4), (LogNormal(60, 0), 60, 60)],
    ids=["fixed", "uniform", "lognormal-cv0"],
)
def test_run_time_distributions_stay_in_range(dist, low, high):
    """Draws stay within the distribution's range."""
    rng = random.Random(1)
    draws = [dist.draw(rng) for _ in range(200)]
    assert low <= min(draws) <= max(draws) <= high


def test_lognormal_has_the_requested_mean_and_spread():
    """LogNormal(mean, cv) draws have that mean and coefficient of variation."""
    rng = random.Random(3)
    draws = [LogNormal(60, 0.3).draw(rng) for _ in range(20_000)]
    mean = sum(draws) / len(draws)
    sd = (sum((d - mean) ** 2 for d in draws) / len(draws)) ** 0.5
    assert 60 == pytest.approx(mean, rel=0.02)
    assert 0.3 == pytest.approx(sd / mean, rel=0.05)


def test_queue_positions_match_a_brute_force_model():
    """Random submits, cancels and clock moves keep positions exact."""
    rng = random.Random(5)
    sim = Simulation(slots=3)
    now, jobs = 0.0, []
    for n in range(2000):
        now += rng.random() * 0.5
        action = rng.random()
        if action < 0.6:
            job = Job(str(n), "m", {}, "t", now, rng.uniform(1, 5), 1, "succeeded", None, 0)
            sim.add(job)
            jobs.append(job)
        elif action < 0.8 and jobs:
            sim.cancel(rng.choice(jobs), now)
        sim.advance(now)
        queued = sorted((j for j in jobs if j.state == "in_queue"), key=lambda j: j.qseq)
        assert list(range(len(queued))) == [sim.queue_position(j) for j in queued]
        assert sim.running() <= 3
    assert len(jobs) > 1000


def test_ten_thousand_queued_jobs_are_cheap():
    """Adding, positioning and draining 10,000 queued jobs takes well under 1 s."""
    started = time.perf_counter()
    sim = Simulation(slots=4)
    jobs = [Job(str(n), "m", {}, "t", 0.0, 1.0, 1, "succeeded", None, 0) for n in range(10_000)]
    for job in jobs:
        sim.add(job)
    for job in jobs[::3]:
        sim.cancel(job, 0.0)
    assert (None, 6663) == (sim.queue_position(jobs[-1]), sim.queue_position(jobs[-2]))
    sim.advance(10_000)
    assert 0 == sim.counts["in_queue"] + sim.counts["in_progress"]
    assert time.perf_counter() - started < 1.0


def test_cli_parses_into_a_config():
    """The command line maps onto EmulatorConfig and Faults."""
    config, host, port = config_from_args(
        [
            "--port",
            "0",
            "--slots",
            "4",
            "--time-scale",
            "0.01",
            "--run-time",
            "uniform:1,2",
            "--fault",
            "submit_202=true",
            "--fault",
            "slow_rate=0.25",
            "--rate-limit",
            "100",
            "--no-record",
        ]
    )
    assert ("127.0.0.1", 0, 4, 0.01) == (host, port, config.slots, config.time_scale)
    assert Uniform(1, 2) == config.run_time
    assert Faults(submit_202=True, slow_rate=0.25, rate_limit=100) == config.faults
    assert not config.record


async def test_emulator_process_serves_and_stops():
    """EmulatorProcess starts the CLI with faults, serves, takes orders, terminates."""
    faults = Faults(submit_202=True, foreign_id="elsewhere")
    async with EmulatorProcess(time_scale=0.01, slots=2, faults=faults) as process:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", process.base_url)
        pid = process.pid
        await anyio.to_thread.run_sync(process.inject, "submit", "foreign_request_id")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.post(f"{process.base_url}/v1/models/{GENERIC}", json={}) as reply,
        ):
            body = await reply.json()
        accepted = await anyio.to_thread.run_sync(process.accepted_submits)
        stats = await anyio.to_thread.run_sync(process.stats)
    assert (202, "elsewhere") == (reply.status, body["request_id"])
    assert ({submit_key(GENERIC, {}): 1}, 1) == (accepted, stats["total_jobs"])
    with pytest.raises(RuntimeError):
        _ = process.base_url
    assert pid > 0


async def test_plugin_fixture_defaults(runcomfy_emulator):
    """The plugin's fixture is a started emulator at time_scale 0.001."""
    assert 0.001 == runcomfy_emulator.config.time_scale
    assert runcomfy_emulator.base_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("runcomfy_emulator_options", [{"slots": 3}], ids=["slots"])
async def test_plugin_fixture_takes_options(runcomfy_emulator):
    """runcomfy_emulator_options configures the plugin's fixture."""
    assert (3, 0.001) == (
        runcomfy_emulator.config.slots,
        runcomfy_emulator.config.time_scale,
    )


def test_cli_takes_chaos_and_the_new_switches():
    """--chaos, --chaos-exclude and the shortcuts map onto Faults; --fault wins."""
    config, _, _ = config_from_args(
        [
            *("--chaos", "0.16", "--chaos-exclude", "hang", "--submit-delay", "2"),
            *("--slow-file", "50", "--big-file", "1000", "--fault", "foreign_id=a=b"),
            *("--fault", "server_error_rate=0", "--fault", "big_file=none"),
        ]
    )
    expected = attrs.evolve(
        Faults.chaos(0.16, exclude=["hang"]),
        submit_delay=2,
        slow_file=50,
        foreign_id="a=b",
        server_error_rate=0,
    )
    assert expected == config.faults


@pytest.mark.parametrize(
    "argv",
    [
        ["--chaos", "2"],
        ["--chaos-exclude", "nope"],
        ["--fault", "big_file=1.5"],
        ["--fault", "nope=1"],
        ["--fault", "hang_rate"],
    ],
    ids=["chaos-2", "exclude-unknown", "int-field", "unknown-field", "no-value"],
)
def test_cli_refuses_bad_faults(argv, capsys):
    """Bad fault flags stop the command line with a usage error."""
    with pytest.raises(SystemExit):
        config_from_args(argv)
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "faults",
    [
        Faults(),
        Faults.chaos(
            0.5,
            base=Faults(
                submit_delay=1.5,
                big_file=10,
                slow_file=3.5,
                foreign_id="../y",
                retry_after="date",
                status_completed_for_success=False,
                rate_limit=3,
            ),
        ),
    ],
    ids=["defaults", "everything"],
)
def test_fault_args_rebuild_the_faults(faults):
    """EmulatorProcess(faults=...) passes Faults to the subprocess losslessly."""
    assert faults == config_from_args(fault_args(faults))[0].faults


def test_public_names_are_sorted_and_documented():
    """__all__ is sorted and every public name has a docstring."""
    names = runcomfy_async.testing.__all__
    assert sorted(names) == names
    for name in names:
        obj = getattr(runcomfy_async.testing, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or callable(obj):
            assert inspect.getdoc(obj), name
