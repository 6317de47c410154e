"""RunComfy: the session object, and a lifecycle whose close always runs."""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.to_thread

from ._admission import LocalAdmission
from ._api import API
from ._clock import Clock, RealClock, cancel_at
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
from ._download import DEFAULT_MAX_BYTES, download
from ._download import DEFAULT_TIMEOUT as DEFAULT_DOWNLOAD_TIMEOUT
from ._engine import Engine
from ._errors import (
    ClientClosedError,
    JournalError,
    MissingTokenError,
    RunComfyError,
    SubmissionUncertainError,
)
from ._events import Hook, Monitor, Stats, logger
from ._job import Job
from ._journal import Journal, NullJournal
from ._model_cache import default_model_cache, load_model_cache, save_model_cache
from ._models import JobResult
from ._polling import AdaptivePolling, PollPolicy
from ._requests import Request
from ._transport import Transport

if TYPE_CHECKING:
    from typing_extensions import Self


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def content_key(request: Request) -> str:
    """Return a stable hash of a request's content (its model and fingerprint).

    A local image counts by its content alone, not its path: a file moved or
    renamed between two runs is still the same job (and is not paid twice).
    """
    text = json.dumps(
        {"model_id": request.model_id, "request": _without_paths(request.fingerprint())},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _without_paths(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("kind") == "file":
            return {k: v for k, v in value.items() if k != "path"}
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


class RunComfy:
    """An async session with the RunComfy Model API.

    Use it once, as an async context manager::

        async with RunComfy() as client:
            job = client.submit(ImageToVideo(prompt=..., image_url=...))
            result = await job

    However the block is left (normally, by an exception, by cancellation,
    Ctrl-C or a timeout), closing runs to the end, shielded and bounded:
    unsent jobs are dropped at once (nothing billed), submits already on the
    wire are awaited for at most ``cancel_timeout``, queued jobs are
    cancelled remotely, jobs that finished meanwhile are collected, and every
    :class:`Job` is resolved. Jobs still running are listed in
    :attr:`running_on`.

    Args:
        token: The API token; by default the first of ``RUNCOMFY_API_TOKEN``,
            ``RUNCOMFY_TOKEN`` and ``RUNCOMFY_API_KEY`` that is set.
        base_url: The API host; by default ``RUNCOMFY_MODEL_API_BASE_URL`` or
            ``https://model-api.runcomfy.net``.
        limits: Jobs in flight, concurrent requests and request rate.
        retry: Backoff, attempts and total time budget for exchanges that are
            safe to repeat.
        timeouts: Per-exchange time limits.
        polling: When to poll each job; :class:`AdaptivePolling` by default.
        job_timeout: A default deadline, in seconds, for every job.
        cancel_timeout: How long each step of closing may take (waiting for
            submits on the wire; remote cancels), in seconds.
        hooks: Callables that receive every :data:`Event`.
        output_hosts: Hosts (with their subdomains) that :meth:`download` may
            fetch from; the API host is always allowed.
        journal: A :class:`Journal`, or a path for a SQLite journal: every
            paid call is written down before it leaves, so a batch killed at
            any moment resumes without paying twice (see :meth:`resume`).
        resubmit_uncertain: Send again a job whose earlier submit's outcome
            is unknown (found as such in the journal). Off by default: such a
            submit may have created a billed job.
        clock: The clock every wait and deadline uses (a
            :class:`VirtualClock` in tests); the event loop's by default.
        model_cache: Where the learned run-time models are kept between
            sessions without a journal, so the next one starts warm: a file
            path, True for the user's cache folder (the default), or False
            for none. The environment variable ``RUNCOMFY_ASYNC_MODEL_CACHE``
            overrides the default (a path, or ``off``). With a journal, the
            models are kept in the journal instead.

    Raises:
        MissingTokenError: No token was given or found.

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
        journal: Journal | str | os.PathLike[str] | None = None,
        resubmit_uncertain: bool = False,
        clock: Clock | None = None,
        model_cache: str | os.PathLike[str] | bool = True,
    ) -> None:
        secret = Secret(token) if token else token_from_env()
        if secret is None:
            raise MissingTokenError(
                "no API token: pass token=... or set RUNCOMFY_API_TOKEN "
                "(RUNCOMFY_TOKEN and RUNCOMFY_API_KEY are read too)"
            )
        self._base_url = normalize_base_url(base_url) if base_url else base_url_from_env()
        api_host = (urlsplit(self._base_url).hostname or "").lower()
        self._output_hosts = (*(h.lower().strip(".") for h in output_hosts), api_host)
        self._retry = retry or RetryPolicy()
        self._limits = limits or Limits()
        self._job_timeout = job_timeout
        self._cancel_timeout = cancel_timeout
        self._clock: Clock = clock if clock is not None else RealClock()
        self._monitor = Monitor(hooks=list(hooks))
        self._transport = Transport(
            self._base_url,
            secret,
            timeouts=timeouts or Timeouts(),
            max_connections=self._limits.max_concurrent_requests,
        )
        self._journal, self._owns_journal = _journal_from(journal)
        self._resubmit_uncertain = resubmit_uncertain
        self._model_cache = _model_cache_path(model_cache)
        self._admission = LocalAdmission(self._limits, self._clock)
        self._api = API(
            self._transport,
            self._admission,
            self._retry,
            self._monitor,
            clock=self._clock,
            max_body_bytes=self._limits.max_body_bytes,
        )
        self._engine = Engine(
            self._api,
            self._monitor,
            policy=polling if polling is not None else AdaptivePolling(),
            clock=self._clock,
            journal=self._journal,
            max_jobs_in_flight=self._limits.max_jobs_in_flight,
            workers=self._limits.max_concurrent_requests,
            cancel_timeout=cancel_timeout,
            retry_budget=self._retry.timeout,
            resubmit_uncertain=resubmit_uncertain,
        )
        self._state = _State.UNOPENED
        self._task_group: anyio.abc.TaskGroup | None = None
        self._running_on: list[Job] = []
        self._occurrences: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (
            f"<RunComfy {self._base_url} {self._state.value} "
            f"live={self._engine.live_jobs} in_flight={self._engine.in_flight}>"
        )

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise ClientClosedError(
                f"a RunComfy client can be opened once; this one is {self._state.value}"
            )
        self._state = _State.OPEN
        await self._transport.open()
        opened_journal = False
        try:
            if self._owns_journal:
                await self._journal.open()  # type: ignore[attr-defined]
                opened_journal = True
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                if opened_journal:
                    await self._journal.close()  # type: ignore[attr-defined]
                await self._transport.close()
            self._state = _State.CLOSED
            raise
        self._task_group = task_group
        self._engine.start(task_group)
        await self._load_models()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._state is not _State.OPEN:
            return None
        self._state = _State.CLOSING
        # Drop unsent work now, before anything else can run.
        self._engine.stop_accepting()
        task_group, self._task_group = self._task_group, None
        assert task_group is not None  # noqa: S101
        # The close runs as a task of the group, shielded: a cancellation of
        # the host (Ctrl-C, a timeout around the block, task.cancel()) reaches
        # this __aexit__ but not the close, and the group's exit waits for it.
        task_group.start_soon(self._close_in_group, task_group, name="runcomfy close")
        try:
            # The host's own exception is not the group's business: it goes on
            # propagating from here, unwrapped, once the close is done.
            await task_group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()
            self._state = _State.CLOSED
        error = self._engine.journal_error
        if error is not None and exc is None:
            raise JournalError(f"the journal failed: {error!r}") from error
        return None

    async def _close_in_group(self, task_group: anyio.abc.TaskGroup) -> None:
        with anyio.CancelScope(shield=True):
            try:
                self._running_on = await self._engine.close()
            finally:
                task_group.cancel_scope.cancel()

    async def _release(self) -> None:
        with cancel_at(self._clock, self._clock.now() + self._cancel_timeout):
            await self._save_models()
        # Never cut short: a journal left open would keep its lock (local
        # disk work, bounded by the store itself).
        if self._owns_journal:
            await self._journal.close()  # type: ignore[attr-defined]
        await self._transport.close()

    async def _load_models(self) -> None:
        """Warm the policy with what earlier sessions learned, if it can learn."""
        policy = self._engine.policy
        if not isinstance(policy, AdaptivePolling):
            return
        try:
            if self._journaled():
                policy.load_models(await self._journal.load_models())  # type: ignore[attr-defined]
            elif self._model_cache is not None:
                await anyio.to_thread.run_sync(load_model_cache, policy, self._model_cache)
        except Exception:  # noqa: BLE001 - a cold start is never worth failing a session
            logger.warning("could not load the learned run-time models", exc_info=True)

    async def _save_models(self) -> None:
        policy = self._engine.policy
        if not isinstance(policy, AdaptivePolling):
            return
        try:
            if self._journaled():
                await self._journal.save_models(policy.export_models())  # type: ignore[attr-defined]
            elif self._model_cache is not None:
                await anyio.to_thread.run_sync(save_model_cache, policy, self._model_cache)
        except Exception:  # noqa: BLE001 - losing a cache is never worth an error at close
            logger.warning("could not save the learned run-time models", exc_info=True)

    def _journaled(self) -> bool:
        return hasattr(self._journal, "load_models") and hasattr(self._journal, "save_models")

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
        return self._engine.policy

    @property
    def clock(self) -> Clock:
        """The clock every wait and deadline of this client uses."""
        return self._clock

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self._job_timeout if timeout is None else timeout
        return None if timeout is None else self._clock.now() + timeout

    def _key(self, request: Any, key: str | None) -> str:
        if key is not None:
            if not key.strip():
                raise ValueError("a job key must be a non-empty string")
            return key
        # Two identical requests in one session are two jobs: the n-th copy
        # of a content gets the n-th key, in this run and in a resumed one.
        content = content_key(request)
        number = self._occurrences[content]
        self._occurrences[content] += 1
        return f"{content}-{number}"

    @staticmethod
    def _check_request(request: object) -> None:
        if not isinstance(request, Request):
            raise TypeError(
                f"cannot submit a {type(request).__name__}; use ImageToVideo or ModelRequest"
            )

    def submit(self, request: Any, *, timeout: float | None = None, key: str | None = None) -> Job:
        """Queue one job and return its :class:`Job` at once.

        The job is sent when the limits allow. ``timeout`` (seconds, from
        now) overrides the client's ``job_timeout``. ``key`` names the job
        (in the journal); by default it is a hash of the request's content
        and of how many identical requests came before it in this session.
        With a journal, a key already recorded is not submitted again: its
        job is followed (or its recorded outcome returned) instead.
        """
        self._check_open()
        self._check_request(request)
        return self._engine.new_job(
            request, key=self._key(request, key), deadline=self._deadline(timeout)
        )

    def submit_many(
        self,
        requests: Iterable[Any],
        *,
        timeout: float | None = None,
        keys: Iterable[str] | None = None,
    ) -> list[Job]:
        """Queue many jobs at once; one :class:`Job` each, in order.

        ``timeout`` is a deadline for the whole batch: every job must be done
        within that many seconds from now. ``keys``, if given, names each job
        in order. Requests are light (a local image is read only when its
        submit goes out); for a batch drawn lazily from a generator or an
        async iterable, use :meth:`stream`.
        """
        self._check_open()
        requests = list(requests)
        for request in requests:
            self._check_request(request)
        names: list[str | None] = list(keys) if keys is not None else [None] * len(requests)
        if len(names) != len(requests):
            raise ValueError(f"{len(names)} keys for {len(requests)} requests")
        deadline = self._deadline(timeout)
        return [
            self._engine.new_job(request, key=self._key(request, name), deadline=deadline)
            for request, name in zip(requests, names, strict=True)
        ]

    async def stream(
        self,
        requests: Iterable[Any] | AsyncIterable[Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - job deadlines, not a scope
        window: int | None = None,
    ) -> AsyncIterator[Job]:
        """Submit requests drawn lazily, and yield each job as it finishes.

        At most ``window`` jobs (by default ``max_jobs_in_flight``) exist at
        once: the next request is drawn only when one finishes, so memory
        stays bounded by concurrency whatever the batch length. Items may be
        requests, or ``(key, request)`` pairs. Leaving the loop early leaves
        the jobs already made running (closing the client settles them).
        """
        self._check_open()
        window = window or self._limits.max_jobs_in_flight
        deadline_timeout = timeout
        send, receive = anyio.create_memory_object_stream[Job](window)
        outstanding = 0

        def deliver(job: Job) -> None:
            send.send_nowait(job)

        async with send, receive:
            async for item in _each(requests):
                while outstanding >= window:
                    yield await receive.receive()
                    outstanding -= 1
                key, request = item if isinstance(item, tuple) else (None, item)
                job = self.submit(request, timeout=deadline_timeout, key=key)
                outstanding += 1
                job.add_done_callback(deliver)
            while outstanding:
                yield await receive.receive()
                outstanding -= 1

    def attach(
        self,
        request_id: str,
        *,
        model_id: str | None = None,
        timeout: float | None = None,
        key: str | None = None,
    ) -> Job:
        """Follow a job submitted elsewhere (another process, an earlier run).

        The returned :class:`Job` is polled like any other (asked about at
        once, as its age is unknown); its ``request`` is None. ``model_id``
        lets it share what the poller learned of that model.
        """
        self._check_open()
        if not request_id.strip():
            raise ValueError("request_id must be a non-empty string")
        return self._engine.attach(
            request_id, model_id=model_id, key=key, deadline=self._deadline(timeout)
        )

    async def resume(self) -> list[Job]:
        """Pick up the journal's unfinished jobs: one :class:`Job` each.

        Every job the server accepted and that had not ended is re-attached by
        its request id and followed to its outcome. A job whose submit was in
        flight when the process died is *uncertain* (it may be billed): its
        job ends at once with :class:`SubmissionUncertainError`, and it is
        never sent again here (submit the same request with
        ``resubmit_uncertain=True`` to do that on purpose).
        """
        self._check_open()
        jobs: list[Job] = []
        for record in await self._journal.unfinished():
            if record.request_id is not None:
                jobs.append(
                    self._engine.attach(record.request_id, model_id=record.model_id, key=record.key)
                )
            else:
                jobs.append(
                    self._engine.settled(
                        key=record.key,
                        model_id=record.model_id,
                        error=SubmissionUncertainError(
                            "its submit was in flight when an earlier run stopped: a billed "
                            "job may exist; it was not re-sent",
                            model_id=record.model_id,
                        ),
                    )
                )
        return jobs

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
                    self._engine.abandon(job._record)
            raise
        return [job.exception() or job.result() for job in jobs]

    async def run(
        self,
        requests: Iterable[Any],
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
        timeout: float | None = DEFAULT_DOWNLOAD_TIMEOUT,  # noqa: ASYNC109 - one deadline over retries
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Path:
        """Save an output file; return its path.

        *target* is a result (its primary video, or its first URL) or one
        output URL. *dest* is a file path, or an existing directory to save
        into under a safe name taken from the URL (else from the request id);
        no name from the server can lead outside that directory. The download
        carries no token, goes only to allowed hosts, is streamed into a
        fresh partial file (never through a planted link), and appears under
        its name only when complete. *timeout* bounds the whole download,
        retries included (None: no bound); *max_bytes* caps its size. Output
        links expire: download soon after the result.

        Raises:
            DownloadError: The host is not allowed, the destination exists
                (and *overwrite* is false), the file is larger than
                *max_bytes*, the server refused, or the retries ran out.
            DownloadTimeoutError: The *timeout* passed.

        """
        self._check_open()
        return await download(
            self._transport,
            target,
            dest,
            allowed=self._output_hosts,
            retry=self._retry,
            overwrite=overwrite,
            max_bytes=max_bytes,
            timeout=timeout,
            clock=self._clock,
        )

    # -- reporting -----------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        """Requests by kind, retries, 429s and jobs by outcome, so far."""
        return self._monitor.snapshot(self._admission.rate)

    @property
    def running_on(self) -> list[Job]:
        """Jobs still running when the client closed, which could not be cancelled."""
        return list(self._running_on)


def _journal_from(journal: Journal | str | os.PathLike[str] | None) -> tuple[Journal, bool]:
    if journal is None:
        return NullJournal(), False
    if isinstance(journal, (str, os.PathLike)):
        from ._journal import SQLiteJournal  # noqa: PLC0415 - sqlite only when asked for

        return SQLiteJournal(journal), True
    return journal, False


MODEL_CACHE_ENV_VAR = "RUNCOMFY_ASYNC_MODEL_CACHE"
"""Overrides where learned run-time models are cached (a path, or ``off``)."""


def _model_cache_path(setting: str | os.PathLike[str] | bool) -> Path | None:
    if setting is False:
        return None
    if setting is True:
        override = os.environ.get(MODEL_CACHE_ENV_VAR, "").strip()
        if override.lower() in {"off", "0", "no", "false"}:
            return None
        if override:
            return Path(override)
        try:
            return default_model_cache()
        except ImportError:  # platformdirs missing: no cache rather than no client
            return None
    return Path(setting)


async def _each(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
