"""examples/web_app.py, served on loopback against the emulator, over real HTTP.

The emulator runs one job at a time (``slots=1``) on a manual clock, so a
job runs until the test moves the clock and a second job stays queued: no
test waits for a render. The app is served as ``web_app.main`` serves it
(``handler_cancellation=True``), with a short ``shutdown_timeout``: aiohttp's
shutdown waits in real time, and a test has no reason to wait long.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType

import aiohttp
import anyio
import pytest
from aiohttp import web
from conftest import FAKE_TOKEN, fast_retry_policy

from runcomfy_async import (
    ClientClosedError,
    FixedInterval,
    ImageToVideo,
    JobRunningOnError,
    Limits,
    RunComfy,
)
from runcomfy_async.testing import FakeRunComfy, Fixed, ManualClock

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "web_app.py"
RUN_TIME = 60.0
IMAGE = "https://example.com/boat.png"


def load_example() -> ModuleType:
    """Import examples/web_app.py by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("web_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


web_app = load_example()


async def eventually(condition: Callable[[], object]) -> None:
    """Let the loop run until *condition()* holds (bounded, never a timing assertion)."""
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - state of a server in this loop
            await anyio.sleep(0.001)


def in_state(fake: FakeRunComfy, state: str) -> list[str]:
    return [request_id for request_id, job in fake.jobs.items() if job.state == state]


@pytest.fixture
def clock():
    """The emulator's clock: jobs move only when the test says so."""
    return ManualClock()


@pytest.fixture
async def fake(clock):
    """One job at a time, each a nominal minute long."""
    async with FakeRunComfy(slots=1, run_time=Fixed(RUN_TIME), clock=clock) as emulator:
        yield emulator


@contextlib.asynccontextmanager
async def serving(
    fake: FakeRunComfy, *, handler_cancellation: bool = True
) -> AsyncIterator[tuple[str, list[RunComfy]]]:
    """Serve the example app on loopback; yield its URL and the client(s) it made.

    ``handler_cancellation=True`` is how ``web_app.main`` serves it. Set up
    and cleaned up in one task, as ``web.run_app`` does: the client's task
    group must be left in the task that entered it.
    """
    made: list[RunComfy] = []

    def client_factory() -> RunComfy:
        client = RunComfy(
            FAKE_TOKEN,
            base_url=fake.base_url,
            polling=FixedInterval(interval=0.002),
            retry=fast_retry_policy(),
            limits=Limits(initial_rate=1000.0, burst=100.0),
        )
        made.append(client)
        return client

    runner = web.AppRunner(
        web_app.make_app(client_factory),
        handler_cancellation=handler_cancellation,
        shutdown_timeout=0.05,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}", made
    finally:
        await runner.cleanup()


async def post_video(session: aiohttp.ClientSession, url: str, prompt: str) -> tuple[int, dict]:
    async with session.post(f"{url}/videos", json={"prompt": prompt, "image_url": IMAGE}) as answer:
        return answer.status, await answer.json()


async def test_one_request_gets_its_video_url(fake, clock):
    answers = []
    async with serving(fake) as (url, _), aiohttp.ClientSession() as session:
        async with anyio.create_task_group() as group:

            async def post() -> None:
                answers.append(await post_video(session, url, "a paper boat"))

            group.start_soon(post)
            await eventually(lambda: in_state(fake, "in_progress"))
            clock.advance(RUN_TIME)
    [(status, body)] = answers
    [request_id] = fake.jobs
    assert (200, request_id) == (status, body["request_id"])
    assert body["video_url"].startswith(fake.base_url)
    assert "succeeded" == fake.jobs[request_id].state


async def test_bad_input_is_refused_before_anything_is_sent(fake):
    async with serving(fake) as (url, _), aiohttp.ClientSession() as session:
        no_json = await session.post(f"{url}/videos", data=b"not json")
        gif = await session.post(
            f"{url}/videos", json={"prompt": "a cat", "image_url": "https://example.com/cat.gif"}
        )
    assert (400, 422) == (no_json.status, gif.status)
    assert 0 == fake.count("submit")


async def raw_post(url: str, prompt: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send POST /videos on a bare connection, so that the test can hang up at will."""
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps({"prompt": prompt, "image_url": IMAGE}).encode()
    head = (
        f"POST /videos HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def test_a_caller_who_hangs_up_cancels_its_queued_job(fake):
    async with serving(fake) as (url, _):
        first = await raw_post(url, "the first job takes the only slot")
        await eventually(lambda: in_state(fake, "in_progress"))
        [running] = in_state(fake, "in_progress")
        _, writer = await raw_post(url, "the second job waits in the queue")
        await eventually(lambda: in_state(fake, "in_queue"))
        [queued] = in_state(fake, "in_queue")

        writer.close()  # the caller hangs up while its job is queued
        await writer.wait_closed()
        await eventually(lambda: fake.count("cancel"))

        cancels = [r.path for r in fake.requests if r.kind == "cancel"]
        assert [f"/v1/requests/{queued}/cancel"] == cancels
        assert (True, "cancelled") == (fake.jobs[queued].cancelled, fake.jobs[queued].state)
        # The other caller is still waiting, and its job runs on untouched.
        assert (False, "in_progress") == (fake.jobs[running].cancelled, fake.jobs[running].state)
        first[1].close()
        await first[1].wait_closed()


async def test_shutting_down_closes_the_client(fake):
    async with aiohttp.ClientSession() as session:
        async with anyio.create_task_group() as group:
            outcomes: list[object] = []

            async def post(prompt: str) -> None:
                try:
                    outcomes.append(await post_video(session, url, prompt))
                except aiohttp.ClientError as error:
                    outcomes.append(error)

            async with serving(fake) as (url, made):
                group.start_soon(post, "runs while the app shuts down")
                await eventually(lambda: in_state(fake, "in_progress"))
                [running] = in_state(fake, "in_progress")
                group.start_soon(post, "queued while the app shuts down")
                await eventually(lambda: in_state(fake, "in_queue"))
                [queued] = in_state(fake, "in_queue")
            # Leaving serving() shut the app down, with both requests in flight.

    [client] = made
    assert [] == in_state(fake, "in_queue")
    assert (True, "cancelled") == (fake.jobs[queued].cancelled, fake.jobs[queued].state)
    # A running job cannot be cancelled: it runs on, billed, and the client says so.
    assert "in_progress" == fake.jobs[running].state
    assert [running] == [job.request_id for job in client.running_on]
    assert isinstance(client.running_on[0].exception(), JobRunningOnError)
    with pytest.raises(ClientClosedError):
        client.submit(ImageToVideo(prompt="too late", image_url=IMAGE))
    # Both callers lost their connection: no answer was made up for them.
    assert 2 == len(outcomes)
    assert all(isinstance(outcome, aiohttp.ClientError) for outcome in outcomes)


async def test_without_handler_cancellation_a_hung_up_callers_job_runs(fake, clock):
    """aiohttp's default: the handler outlives its caller, and the job is billed for no one."""
    async with serving(fake, handler_cancellation=False) as (url, _):
        first = await raw_post(url, "the first job takes the only slot")
        await eventually(lambda: in_state(fake, "in_progress"))
        _, writer = await raw_post(url, "the second job waits in the queue")
        await eventually(lambda: in_state(fake, "in_queue"))
        [queued] = in_state(fake, "in_queue")
        writer.close()
        await writer.wait_closed()

        clock.advance(RUN_TIME)  # the first job ends: the hung-up caller's job starts
        await eventually(lambda: fake.jobs[queued].state == "in_progress")
        assert 0 == fake.count("cancel")
        first[1].close()
        await first[1].wait_closed()
