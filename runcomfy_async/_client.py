"""RunComfy: the session object, and its lifecycle."""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import anyio.abc

from ._api import API
from ._config import (
    DEFAULT_OUTPUT_HOST_SUFFIXES,
    Limits,
    RetryPolicy,
    Secret,
    Timeouts,
    base_url_from_env,
    normalize_base_url,
    token_from_env,
)
from ._download import download, file_name
from ._errors import AuthenticationError, ClientClosedError, DownloadError, RunComfyError
from ._events import Hook, Monitor, Stats
from ._job import Job
from ._models import ImageToVideo, JobResult, ModelRequest
from ._polling import AdaptivePolling, PollPolicy
from ._ratelimit import Throttle
from ._scheduler import Scheduler
from ._transport import Transport

if TYPE_CHECKING:
    from typing_extensions import Self


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class RunComfy:
    """An async session with the RunComfy Model API.

    Use it once, as an async context manager::

        async with RunComfy() as client:
            job = client.submit(ImageToVideo(prompt=..., image_url=...))
            result = await job

    Args:
        token: The API token; by default the first of ``RUNCOMFY_API_TOKEN``,
            ``RUNCOMFY_TOKEN`` and ``RUNCOMFY_API_KEY`` that is set.
        base_url: The API host; by default ``RUNCOMFY_MODEL_API_BASE_URL`` or
            ``https://model-api.runcomfy.net``.
        limits: Jobs in flight, concurrent requests and request rate.
        retry: Backoff for exchanges that are safe to repeat.
        timeouts: Per-exchange time limits.
        polling: When to poll each job; :class:`AdaptivePolling` by default.
        job_timeout: A default deadline, in seconds, for every job.
        cancel_timeout: How long closing may spend cancelling queued jobs.
        hooks: Callables that receive every :data:`Event`.
        output_hosts: Hosts (with their subdomains) that :meth:`download` may
            fetch from; the API host is always allowed.

    Raises:
        AuthenticationError: No token was given or found.

    """

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        polling: PollPolicy | None = None,
        job_timeout: float | None = None,
        cancel_timeout: float = 10.0,
        hooks: Iterable[Hook] = (),
        output_hosts: Sequence[str] = DEFAULT_OUTPUT_HOST_SUFFIXES,
    ) -> None:
        secret = Secret(token) if token else token_from_env()
        if secret is None:
            raise AuthenticationError(
                "no API token: pass token=... or set RUNCOMFY_API_TOKEN "
                "(RUNCOMFY_TOKEN and RUNCOMFY_API_KEY are read too)"
            )
        self._base_url = normalize_base_url(base_url) if base_url else base_url_from_env()
        api_host = (urlsplit(self._base_url).hostname or "").lower()
        self._output_hosts = (*(h.lower().strip(".") for h in output_hosts), api_host)
        self._retry = retry or RetryPolicy()
        self._limits = limits or Limits()
        self._job_timeout = job_timeout
        self._monitor = Monitor(hooks=list(hooks))
        self._transport = Transport(
            self._base_url,
            secret,
            timeouts=timeouts or Timeouts(),
            max_connections=self._limits.max_concurrent_requests,
        )
        self._throttle = Throttle(self._limits)
        self._api = API(self._transport, self._throttle, self._retry, self._monitor)
        self._scheduler = Scheduler(
            self._api,
            self._monitor,
            policy=polling if polling is not None else AdaptivePolling(),
            max_jobs_in_flight=self._limits.max_jobs_in_flight,
            workers=self._limits.max_concurrent_requests,
            cancel_timeout=cancel_timeout,
        )
        self._state = _State.UNOPENED
        self._task_group: anyio.abc.TaskGroup | None = None
        self._running_on: list[Job] = []

    def __repr__(self) -> str:
        return (
            f"<RunComfy {self._base_url} {self._state.value} "
            f"live={self._scheduler.live_jobs} in_flight={self._scheduler.in_flight}>"
        )

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise ClientClosedError(
                f"a RunComfy client can be opened once; this one is {self._state.value}"
            )
        self._state = _State.OPEN
        await self._transport.open()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._scheduler.start(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._state = _State.CLOSED
        self._scheduler.stop_accepting()
        task_group, self._task_group = self._task_group, None
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                # Waits for shielded submits to read their answers.
                await task_group.__aexit__(None, None, None)
            self._running_on = await self._scheduler.close()
        finally:
            with anyio.CancelScope(shield=True):
                await self._transport.close()
        return None

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise ClientClosedError(
                f"the client is {self._state.value}: use it inside 'async with'"
            )

    # -- jobs ----------------------------------------------------------------------

    @property
    def api(self) -> API:
        """The four single calls (``submit``, ``status``, ``result``, ``cancel``).

        Each is one exchange plus the retries that are safe; use them to run
        your own loop. They share this client's limits and rate control.
        """
        self._check_open()
        return self._api

    @property
    def policy(self) -> PollPolicy:
        """The polling policy (with what it has learned so far)."""
        return self._scheduler.policy

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self._job_timeout if timeout is None else timeout
        return None if timeout is None else anyio.current_time() + timeout

    def submit(self, request: ImageToVideo | ModelRequest, *, timeout: float | None = None) -> Job:
        """Queue one job and return its :class:`Job` at once.

        The job is sent when the limits allow. ``timeout`` (seconds, from
        now) overrides the client's ``job_timeout``.
        """
        self._check_open()
        if not isinstance(request, (ImageToVideo, ModelRequest)):
            raise TypeError(
                f"cannot submit a {type(request).__name__}; use ImageToVideo or ModelRequest"
            )
        job = Job(request, self._scheduler, deadline=self._deadline(timeout))
        self._scheduler.add(job)
        return job

    def submit_many(
        self, requests: Iterable[ImageToVideo | ModelRequest], *, timeout: float | None = None
    ) -> list[Job]:
        """Queue many jobs at once; one :class:`Job` each, in order.

        ``timeout`` is a deadline for the whole batch: every job must be done
        within that many seconds from now.
        """
        self._check_open()
        requests = list(requests)
        for request in requests:
            if not isinstance(request, (ImageToVideo, ModelRequest)):
                raise TypeError(
                    f"cannot submit a {type(request).__name__}; use ImageToVideo or ModelRequest"
                )
        deadline = self._deadline(timeout)
        jobs = [Job(request, self._scheduler, deadline=deadline) for request in requests]
        for job in jobs:
            self._scheduler.add(job)
        return jobs

    def attach(
        self, request_id: str, *, model_id: str | None = None, timeout: float | None = None
    ) -> Job:
        """Follow a job submitted elsewhere (another process, an earlier run).

        The returned :class:`Job` is polled like any other; its ``request`` is
        None. ``model_id`` lets it share what the poller learned of that model.
        """
        self._check_open()
        if not request_id.strip():
            raise ValueError("request_id must be a non-empty string")
        job = Job(
            None,
            self._scheduler,
            request_id=request_id,
            model_id=model_id,
            deadline=self._deadline(timeout),
        )
        self._scheduler.attach(job)
        return job

    async def as_completed(self, jobs: Iterable[Job]) -> AsyncIterator[Job]:
        """Yield each job as it finishes, failed ones included.

        A failed job raises only when its own result is asked for
        (``job.result()``). Leaving the loop early cancels nothing.
        """
        jobs = list(jobs)
        send, receive = anyio.create_memory_object_stream[Job](len(jobs))

        def deliver(job: Job) -> None:
            # After an early exit the stream is closed; the job needs no one.
            with contextlib.suppress(anyio.ClosedResourceError):
                send.send_nowait(job)

        with send, receive:
            for job in jobs:
                job.add_done_callback(deliver)
            for _ in jobs:
                yield await receive.receive()

    async def gather(self, jobs: Sequence[Job]) -> list[JobResult | RunComfyError]:
        """Wait for every job; return each one's result or error, in order.

        One failure never sinks the batch. If the waiting task is cancelled,
        the jobs are cancelled with it (remotely, those still queued).
        """
        try:
            for job in jobs:
                await job._settled()
        except anyio.get_cancelled_exc_class():
            for job in jobs:
                if not job.done():
                    self._scheduler.abandon(job)
            raise
        return [job.exception() or job.result() for job in jobs]

    async def run(
        self,
        requests: Iterable[ImageToVideo | ModelRequest],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a job deadline with remote cancel, not a scope
    ) -> list[JobResult | RunComfyError]:
        """Submit a batch and wait for all of it: ``gather(submit_many(...))``."""
        return await self.gather(self.submit_many(requests, timeout=timeout))

    async def download(
        self,
        target: JobResult | str,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
    ) -> Path:
        """Save an output file; return its path.

        *target* is a result (its primary video, or its first URL) or one
        output URL. *dest* is a file path, or an existing directory to save
        into under the URL's file name. The download carries no token, goes
        only to allowed hosts, is streamed, and appears under its name only
        when complete. Output links expire: download soon after the result.

        Raises:
            DownloadError: The host is not allowed, the server refused, or
                the retries ran out.

        """
        self._check_open()
        if isinstance(target, JobResult):
            url = target.video_url or (target.urls[0] if target.urls else None)
            if url is None:
                raise DownloadError(f"result {target.request_id} has no output URL")
            fallback = f"{target.request_id}.mp4"
        else:
            url, fallback = target, "output"
        path = Path(dest)
        if await anyio.Path(path).is_dir():
            path /= file_name(url, fallback)
        return await download(
            self._transport,
            url,
            path,
            allowed=self._output_hosts,
            retry=self._retry,
            overwrite=overwrite,
        )

    # -- reporting -----------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        """Requests by kind, retries, 429s and jobs by outcome, so far."""
        return self._monitor.snapshot(self._throttle.rate)

    @property
    def running_on(self) -> list[Job]:
        """Jobs still running when the client closed, which could not be cancelled."""
        return list(self._running_on)
