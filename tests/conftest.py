"""Shared fixtures: a started emulator and a fast client pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from runcomfy_async import Limits, RetryPolicy, RunComfy
from runcomfy_async.testing import FakeRunComfy

# Tests start cold: what an earlier run learned must not change what they see.
os.environ["RUNCOMFY_ASYNC_MODEL_CACHE"] = "off"

FAKE_TOKEN = "test-token"
FAKE_TIME_SCALE = 0.001
"""A nominal minute of the emulator lasts 60 ms."""


def fast_retry_policy(**overrides: object) -> RetryPolicy:
    """A retry policy that waits milliseconds, for tests."""
    settings: dict[str, object] = {"attempts": 4, "initial": 0.001, "maximum": 0.01}
    settings.update(overrides)
    return RetryPolicy(**settings)


@pytest.fixture
def fake_options():
    """Keyword options for the ``fake`` emulator; parametrize or override to change."""
    return {}


@pytest.fixture
async def fake(fake_options):
    """A started in-process emulator at a small time scale."""
    async with FakeRunComfy(**{"time_scale": FAKE_TIME_SCALE, **fake_options}) as emulator:
        yield emulator


@pytest.fixture
def client_options():
    """Keyword options for the ``client`` fixture; parametrize or override to change."""
    return {}


@pytest.fixture
async def client(fake, client_options):
    """An open RunComfy pointed at ``fake``, retrying within milliseconds.

    pytest-asyncio sets a fixture up and tears it down in two different
    tasks, and a client's task group must be left in the task that entered
    it: so one helper task holds the client open for the whole test.
    """
    options = {
        "base_url": fake.base_url,
        "retry": fast_retry_policy(),
        "limits": Limits(initial_rate=1000.0, burst=100.0),
        **client_options,
    }
    opened: asyncio.Future[RunComfy] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def hold_open() -> None:
        async with RunComfy(FAKE_TOKEN, **options) as held:
            opened.set_result(held)
            await finished.wait()

    holder = asyncio.create_task(hold_open())
    holder.add_done_callback(
        lambda task: opened.done() or opened.set_exception(task.exception() or RuntimeError())
    )
    try:
        yield await opened
    finally:
        finished.set()
        await holder


@contextlib.asynccontextmanager
async def _serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def serving():
    """``async with serving(handler) as url``: a one-handler server on loopback.

    Stands for a host that is not the emulator: a proxy, a redirect target,
    an output file host.
    """
    return _serve
