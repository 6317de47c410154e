"""One RunComfy client shared by an aiohttp web app.

``POST /videos`` with ``{"prompt": ..., "image_url": ...}`` submits an
image-to-video job, waits for it and answers ``{"request_id", "video_url"}``.
If the caller hangs up first, its handler is cancelled, and so is its job:
remotely, so that a job still queued is never billed.

Run it (the token comes from the environment, as everywhere)::

    export RUNCOMFY_API_TOKEN=...
    python examples/web_app.py --port 8080
    curl -X POST localhost:8080/videos \
        -d '{"prompt": "a paper boat at dawn", "image_url": "https://example.com/boat.png"}'

Against the emulator (nothing billed), start ``runcomfy-async emulator --port
8765`` first and add ``RUNCOMFY_MODEL_API_BASE_URL=http://127.0.0.1:8765``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from runcomfy_async import ImageToVideo, JobFailedError, RunComfy, RunComfyError, ValidationError

JOB_TIMEOUT = 15 * 60
"""Seconds a job may take, from its submit; a queued job past it is cancelled."""

SHUTDOWN_TIMEOUT = 10.0
"""Seconds aiohttp lets in-flight requests finish at shutdown before cancelling them.

aiohttp 3.14 may wait up to twice this, and the client's close comes after.
Keep the sum well under your platform's grace period (Kubernetes: 30 s by
default): a process killed before the client closes leaves its queued jobs
queued, to run and be billed with no one waiting for them.
"""

CLIENT_FACTORY: web.AppKey[Callable[[], RunComfy]] = web.AppKey("client_factory")
CLIENT = web.AppKey("runcomfy", RunComfy)

log = logging.getLogger("web_app")


def make_app(client_factory: Callable[[], RunComfy] = RunComfy) -> web.Application:
    """Build the app; *client_factory* makes its one client (tests point it at the emulator)."""
    app = web.Application()
    app[CLIENT_FACTORY] = client_factory
    app.cleanup_ctx.append(runcomfy_client)
    app.router.add_post("/videos", create_video)
    return app


async def runcomfy_client(app: web.Application) -> AsyncIterator[None]:
    """Open the app's one client at startup; close it at cleanup, after the last request."""
    async with app[CLIENT_FACTORY]() as client:
        app[CLIENT] = client
        yield
    # Closing dropped unsent jobs, cancelled queued ones remotely and resolved
    # every job. A job that was already running could not be stopped: it runs
    # on and is billed, so say which, to collect it later with attach().
    for job in client.running_on:
        log.warning("job %s was running at shutdown: it runs on and is billed", job.request_id)


async def create_video(request: web.Request) -> web.Response:
    """Submit one job and answer its video URL once it is done."""
    try:
        body: Any = await request.json()
        video = ImageToVideo(prompt=body["prompt"], image_url=body["image_url"])
    except ValidationError as error:  # checked here, before anything is sent or billed
        raise web.HTTPUnprocessableEntity(text=str(error)) from error
    except (ValueError, LookupError, TypeError) as error:
        raise web.HTTPBadRequest(text='expected JSON {"prompt": ..., "image_url": ...}') from error
    job = request.app[CLIENT].submit(video, timeout=JOB_TIMEOUT)
    try:
        # If the caller hangs up now, aiohttp cancels this task (with
        # handler_cancellation=True): awaiting the job then cancels it too.
        result = await job
    except JobFailedError as error:
        return web.json_response({"request_id": job.request_id, "error": str(error)}, status=502)
    except RunComfyError as error:  # a deadline, an outage, or the server shutting down
        return web.json_response({"request_id": job.request_id, "error": str(error)}, status=503)
    return web.json_response({"request_id": job.request_id, "video_url": result.video_url})


def main() -> None:
    """Serve the app until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description="Serve POST /videos with one RunComfy client.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    web.run_app(
        make_app(),
        host=options.host,
        port=options.port,
        # Off by default in aiohttp: a handler whose caller hung up would run
        # on, and its job with it, queued or not, to be billed for no one.
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )


if __name__ == "__main__":
    main()
