"""The emulator: a real aiohttp server that speaks the RunComfy Model API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias

import aiohttp
import attrs
from aiohttp import web

from ._config import SEED_MODEL, EmulatorConfig, FaultName, FaultTarget, clock_reader
from ._faults import FAULT_NAMES, FAULT_TARGETS, FaultPicker, TokenBucket, retry_after_value
from ._samples import fake_mp4, fake_mp4_stream, sample_jpeg, sample_png
from ._sim import STATES, Job, JobState, Simulation
from ._validate import FetchError, check_seed_payload, problem_fields

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from types import TracebackType

    from typing_extensions import Self, Unpack

    from ._config import EmulatorOptions, Outcome

RequestKind: TypeAlias = Literal[
    "submit", "status", "result", "cancel", "file", "image", "admin", "unknown"
]
_Action: TypeAlias = (
    "Callable[[web.Request, bytes, str, FaultName | None], Awaitable[web.Response]]"
)

_MAX_BODY: Final = 32 * 2**20  # a 4.7 MB image as a base64 data URI, and room
_MAX_FETCH: Final = 64 * 2**20
_SHUTDOWN_TIMEOUT: Final = 0.2  # a test's emulator should not linger on close
_FILE_NAME: Final = re.compile(r"(?P<id>[0-9a-f-]{36})(?:-(?P<n>[0-9]+))?\.mp4")
_IMAGE_NAME: Final = re.compile(r"(?P<w>[0-9]{1,5})x(?P<h>[0-9]{1,5})\.(?P<ext>png|jpe?g)")
_HTML_502: Final = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr>"
    "<center>cloudflare</center></body></html>"
)
_MALFORMED: Final = (b'{"request_id": "', b'{"message": "accepted"}')
# Not a status line, not headers: an HTTP client can only fail to parse it.
_NOT_HTTP: Final = b"\x00\x16 RUNCOMFY EMULATOR: THIS IS NOT HTTP \xff\xfe\r\n\r\n"
# Faults that strike after the request was processed (a submit is accepted).
_AFTER_PROCESSING: Final = frozenset(
    {"drop_after", "malformed", "malformed_http", "hang_after_accept", "foreign_request_id"}
)
_POLL: Final = 0.02  # real seconds between looks at a held request's connection
_FILE_PIECE: Final = 2**16
_EMPTY_NAME: Final = "%3F%3F"  # "??": nothing left once a file name is sanitised
_ERR_AUTH: Final = 401001
_ERR_BALANCE: Final = 400002
_ERR_FORBIDDEN: Final = 403001
_ERR_NOT_FOUND: Final = 404001
_ERR_MODEL: Final = 400001
_ERR_INPUT: Final = 422001
_ERR_NOT_READY: Final = 400005
_ERR_SERVER: Final = 500001
_UNFINISHED: Final = frozenset({"in_queue", "in_progress"})


@attrs.frozen
class RecordedRequest:
    """One request the emulator received, as it arrived.

    Attributes:
        kind: ``submit``, ``status``, ``result``, ``cancel``, ``file`` (output
            downloads), ``image`` (sample images), ``admin`` or ``unknown``.
        method: The HTTP method.
        path: The URL path.
        query: The query parameters (the last value of each name).
        headers: The request headers, names in lower case.
        body: The raw body; None when empty or when bodies are not recorded.
        time: When it arrived, on the emulator clock.

    """

    kind: RequestKind
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None
    time: float


@attrs.frozen(kw_only=True)
class JobView:
    """A snapshot of one emulated job, for tests to assert on.

    Attributes:
        request_id: The job's id.
        model_id: The model it was submitted to.
        payload: The submitted JSON object (do not mutate it).
        token: The token it was submitted with (its account).
        state: ``in_queue``, ``in_progress``, ``succeeded``, ``failed`` or
            ``cancelled``.
        outcome: How it ends (or ended) if not cancelled: ``succeeded`` or
            ``failed``.
        cancelled: Whether it was cancelled.
        queue_position: Jobs ahead of it, while it is queued.
        created: Submit time on the emulator clock.
        started: Start time on the emulator clock, once started.
        finished: End time on the emulator clock, once terminal.
        run_time: The nominal run time in seconds (before ``time_scale``).
        cost: What it costs in USD (0 once cancelled).
        error: The ``error`` a failed job reports.
        submit_key: ``submit_key(model_id, payload)``, the key of
            :meth:`FakeRunComfy.accepted_submits`.
        submit_fault: The fault that struck the submit's answer after the
            job was created (``drop_after``, ``malformed``,
            ``malformed_http``, ``hang_after_accept``,
            ``foreign_request_id``), so the client never learnt of the job
            from it; None when it was answered normally.

    """

    request_id: str
    model_id: str
    payload: dict[str, object]
    token: str
    state: JobState
    outcome: Outcome
    cancelled: bool
    queue_position: int | None
    created: float
    started: float | None
    finished: float | None
    run_time: float
    cost: float
    error: object
    submit_key: str
    submit_fault: str | None


class _JobsView(Mapping[str, JobView]):
    """Request id -> JobView; every lookup sees the jobs as of now."""

    def __init__(self, fake: FakeRunComfy) -> None:
        self._fake = fake

    def __getitem__(self, request_id: str) -> JobView:
        sim = self._fake._advance()
        job = sim.jobs[request_id]
        return JobView(
            request_id=job.request_id,
            model_id=job.model_id,
            payload=job.payload,
            token=job.token,
            state=job.state,
            outcome=job.outcome,
            cancelled=job.state == "cancelled",
            queue_position=sim.queue_position(job),
            created=job.created,
            started=job.started,
            finished=job.finished,
            run_time=job.nominal_run_time,
            cost=0.0 if job.state == "cancelled" else job.cost,
            error=job.error,
            submit_key=job.key,
            submit_fault=job.submit_fault,
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._fake._sim.jobs)

    def __len__(self) -> int:
        return len(self._fake._sim.jobs)


def submit_key(model_id: str, payload: Mapping[str, object]) -> str:
    """Return the key under which :meth:`FakeRunComfy.accepted_submits` counts a submit.

    The client sends no idempotency key, so a submit is known by what it
    asks for: a SHA-256 of the model id and the payload as canonical JSON
    (sorted keys, no spaces), so key order and spacing do not matter. Give
    each job of a test a distinct payload (a ``seed``, a prompt) and a count
    above 1 is a job paid twice.
    """
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{model_id}\n{canonical}".encode()).hexdigest()


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


def _cancel(handle: _Cancellable) -> None:
    handle.cancel()


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _dumps(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(data), status=status, content_type="application/json")


class FakeRunComfy:
    """An emulated RunComfy Model API on a real loopback HTTP server.

    Use it as ``async with FakeRunComfy(**options) as fake:`` and point a
    client at ``fake.base_url``. Options are the fields of
    :class:`EmulatorConfig`, given as keywords or as ``config=``. Jobs advance
    on ``clock`` (pass a :class:`ManualClock` to move them by hand), fault
    switches come from :class:`Faults`, scripted faults from :meth:`inject`,
    and every request is recorded in :attr:`requests`.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        **options: Unpack[EmulatorOptions],
    ) -> None:
        if config is None:
            config = EmulatorConfig(**options)
        elif options:
            config = attrs.evolve(config, **options)
        self.config: Final = config
        self._clock = clock_reader(config.clock)
        call_at = getattr(config.clock, "call_at", None)
        self._call_at: Callable[[float, Callable[[], object]], _Cancellable] | None = (
            call_at if callable(call_at) else None
        )
        # Jobs and faults draw from separate generators, so the seeded job
        # outcomes do not depend on how many requests came in between.
        self._rng = random.Random(config.seed)
        self._faults = FaultPicker(config.faults, random.Random(f"faults/{config.seed}"))
        rate_limit = config.faults.rate_limit
        self._bucket = TokenBucket(rate_limit, config.faults.rate_burst) if rate_limit else None
        self._tokens = frozenset((config.token, *config.other_tokens))
        self._sim = Simulation(config.slots)
        self._balance = config.balance
        self._wall_offset = time.time() - self._clock()
        self._requests: list[RecordedRequest] = []
        self._counts: Counter[str] = Counter()
        self._in_flight = 0
        self._peak = 0
        self._rejected = 0
        self._malformed_sent = 0
        self._accepted: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closed = False
        self._app = self._build_app()

    # -- lifecycle -------------------------------------------------------

    @property
    def app(self) -> web.Application:
        """The aiohttp application, to embed in another server or test client."""
        return self._app

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``), once started."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not started")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving on ``host:port`` (port 0 picks a free port)."""
        if self._runner is not None or self._closed:
            raise RuntimeError("an emulator can be started once")
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await self.close()
            raise
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._base_url = f"http://{shown}:{bound_port}"

    async def close(self) -> None:
        """Stop serving and release everything; safe to call twice."""
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._close_session()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        counts = self._sim.counts
        where = self._base_url or "not started"
        return (
            f"<FakeRunComfy {where} jobs={len(self._sim.jobs)} "
            f"queued={counts['in_queue']} running={counts['in_progress']} "
            f"requests={sum(self._counts.values())}>"
        )

    # -- what tests look at ----------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every recorded request, oldest first."""
        return list(self._requests)

    def count(self, kind: RequestKind | None = None) -> int:
        """How many requests arrived (of one kind); kept even with record=False."""
        if kind is None:
            return sum(self._counts.values())
        return self._counts[kind]

    @property
    def peak_concurrency(self) -> int:
        """The most API requests that were being handled at the same time."""
        return self._peak

    @property
    def in_flight(self) -> int:
        """API requests being handled right now."""
        return self._in_flight

    @property
    def rejected(self) -> int:
        """How many 429s were sent."""
        return self._rejected

    @property
    def jobs(self) -> Mapping[str, JobView]:
        """Request id -> a snapshot of that job, as of the clock's now."""
        return _JobsView(self)

    @property
    def balance(self) -> float | None:
        """The account balance left in USD; None when unlimited."""
        return self._balance

    @property
    def pending_faults(self) -> int:
        """Scripted faults not yet served."""
        return self._faults.pending()

    def inject(self, kind: FaultTarget, fault: FaultName, times: int = 1) -> None:
        """Script a fault for the next ``times`` API requests of ``kind``.

        ``kind`` is ``submit``, ``status``, ``result``, ``cancel`` or ``any``.
        ``fault`` is one of ``server_error`` (500), ``unavailable`` (503,
        nothing done), ``html_error`` (502 HTML),
        ``drop_before`` (connection closed, nothing done), ``drop_after`` (done,
        then closed), ``slow`` (``slow_seconds`` late), ``rate_limited`` (429
        with ``Retry-After``), ``rate_limited_no_retry_after``, ``malformed``
        (done, then 200 with a broken body: alternately not JSON and JSON
        without the required fields), ``error_200`` (200 with error_code
        500001, nothing done), ``stray_429`` (429 with ``Retry-After: 1``,
        nothing done), ``hang`` (nothing done, never answered),
        ``hang_after_accept`` (done, never answered), ``malformed_http``
        (done, then bytes that are not HTTP), ``unknown_status`` (status
        and result only: an unknown status word), ``foreign_request_id``
        (another ``request_id`` in the answer) or ``empty_file_name``
        (result only: output URLs whose file name sanitises to nothing).
        See :class:`Faults` for each. Scripted faults are served first come,
        first served, before any random ones; an ``any`` fault waits for a
        request it can show on.

        Raises:
            ValueError: an unknown kind or fault, ``times < 1``, or a fault
                that cannot show on that kind of request.

        """
        self._faults.inject(kind, fault, times)

    def accepted_submits(self) -> dict[str, int]:
        """How many times each submit was accepted (a job created and billed).

        Keys are :func:`submit_key` of the model id and payload. A submit
        whose answer was lost (dropped, hung, malformed, held back by
        ``submit_delay`` while the client died) counts here all the same:
        that is how a test learns whether an uncertain submit made a job,
        and whether a retry made a second one.
        """
        return dict(self._accepted)

    def reset_stats(self) -> None:
        """Forget recorded requests, counts, peak concurrency and 429s."""
        self._requests.clear()
        self._counts.clear()
        self._peak = self._in_flight
        self._rejected = 0

    def stats(self) -> dict[str, object]:
        """Return what ``GET /_emulator/stats`` answers."""
        sim = self._advance()
        return {
            "requests": dict(self._counts),
            "total_requests": sum(self._counts.values()),
            "peak_concurrency": self._peak,
            "in_flight": self._in_flight,
            "rejected": self._rejected,
            "jobs": {state: sim.counts[state] for state in STATES},
            "total_jobs": len(sim.jobs),
            "pending_faults": self._faults.pending(),
        }

    # -- plumbing ----------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        add = app.router.add_route
        add("POST", "/v1/models/{model_id:.+}", self._on_submit)
        add("GET", "/v1/requests/{request_id}/status", self._on_status)
        add("GET", "/v1/requests/{request_id}/result", self._on_result)
        add("POST", "/v1/requests/{request_id}/cancel", self._on_cancel)
        add("GET", "/_emulator/files/{name}", self._on_file)
        add("GET", "/_emulator/images/{name}", self._on_image)
        add("GET", "/_emulator/stats", self._on_stats)
        add("GET", "/_emulator/jobs", self._on_jobs)
        add("POST", "/_emulator/reset-stats", self._on_reset)
        add("POST", "/_emulator/inject", self._on_inject)
        add("GET", "/_emulator/accepted-submits", self._on_accepted)
        add("GET", "/_emulator/files/{request_id}/{name}", self._on_file)
        add("*", "/{tail:.*}", self._on_unknown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_cleanup(self, _: web.Application) -> None:
        await self._close_session()

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _advance(self) -> Simulation:
        self._sim.advance(self._clock())
        return self._sim

    def _wall(self, at: float) -> str:
        moment = datetime.fromtimestamp(self._wall_offset + at, tz=timezone.utc)
        return moment.isoformat(timespec="microseconds")

    def _note(self, kind: RequestKind, request: web.Request, body: bytes | None) -> None:
        self._counts[kind] += 1
        if not self.config.record:
            return
        self._requests.append(
            RecordedRequest(
                kind=kind,
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=(body or None) if self.config.record_bodies else None,
                time=self._clock(),
            )
        )

    def _error(self, status: int, code: int, message: str, detail: object = None) -> web.Response:
        if self.config.faults.errors_as_200:
            status = 200
        body = {"error_code": code, "error_message": message, "detail": detail}
        return _json(body, status)

    def _too_many(self, seconds: float, *, whole: bool, header: bool) -> web.Response:
        self._rejected += 1
        headers = {}
        value = retry_after_value(seconds, whole=whole, style=self.config.faults.retry_after)
        if header and value is not None:
            headers["Retry-After"] = value
        body = {
            "error_code": None,
            "error_message": "Too Many Requests",
            "detail": None,
        }
        return web.Response(
            body=_dumps(body),
            status=429,
            headers=headers,
            content_type="application/json",
        )

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        # With its transport closed, aiohttp fails writing the answer as a
        # client disconnect and drops it; the client sees the connection end.
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response()

    def _malformed(self) -> web.Response:
        body = _MALFORMED[self._malformed_sent % len(_MALFORMED)]
        self._malformed_sent += 1
        return web.Response(body=body, content_type="application/json")

    @classmethod
    def _not_http(cls, request: web.Request) -> web.Response:
        # Written straight to the socket, before aiohttp writes a status line.
        transport = request.transport
        if transport is not None:
            transport.write(_NOT_HTTP)
        return cls._drop(request)

    def _gone(self, request: web.Request) -> bool:
        transport = request.transport
        return self._closed or transport is None or transport.is_closing()

    def _timer(self, seconds: float, done: asyncio.Future[None]) -> _Cancellable:
        """Resolve ``done`` in ``seconds``, on the clock's timers if it has any."""

        def fire() -> None:
            if not done.done():
                done.set_result(None)

        if self._call_at is not None:
            return self._call_at(self._clock() + seconds, fire)
        return asyncio.get_running_loop().call_later(seconds, fire)

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (already scaled) on the clock's timers, or for real."""
        if self._call_at is None:
            await asyncio.sleep(seconds)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self._timer(seconds, done)
        try:
            await done
        finally:
            _cancel(handle)

    async def _hold(self, request: web.Request, seconds: float) -> bool:
        """Wait ``seconds`` (inf: forever); False if the client left or we closed first.

        aiohttp does not cancel a handler whose client went away, so a held
        answer looks at its connection now and then: a hung request must end
        when its client gives up, not linger until the emulator closes.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self._timer(seconds, done) if math.isfinite(seconds) else None
        try:
            while not done.done():
                if self._gone(request):
                    return False
                await asyncio.wait({done}, timeout=_POLL)
        finally:
            if handle is not None:
                _cancel(handle)
            done.cancel()
        return True

    def _scaled(self, nominal: float) -> float:
        return nominal * self.config.time_scale

    def _authenticate(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or token not in self._tokens:
            return None
        return token

    async def _api(self, request: web.Request, kind: RequestKind, action: _Action) -> web.Response:
        body = await request.read()
        self._note(kind, request, body)
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        try:
            return await self._serve(request, kind, body, action)
        finally:
            self._in_flight -= 1

    async def _serve(
        self, request: web.Request, kind: RequestKind, body: bytes, action: _Action
    ) -> web.Response:
        config = self.config
        # The hidden limit sits at the edge: over it, nothing else happens.
        if self._bucket is not None and (wait := self._bucket.take()):
            return self._too_many(wait, whole=config.time_scale == 1, header=True)
        fault = self._faults.pick(kind)
        early = self._early_fault(request, fault)
        if early is not None:
            return early
        if fault == "hang":
            await self._hold(request, math.inf)
            return self._drop(request)
        delay = config.latency + (config.faults.slow_seconds if fault == "slow" else 0)
        if delay > 0:
            await self._sleep(self._scaled(delay))
        token = self._authenticate(request)
        if token is None:
            return self._error(
                401,
                _ERR_AUTH,
                "invalid or missing API token",
                "send 'Authorization: Bearer <token>'",
            )
        self._sim.advance(self._clock())
        response = await action(request, body, token, fault)
        return await self._late_fault(request, fault, response)

    async def _late_fault(
        self, request: web.Request, fault: FaultName | None, response: web.Response
    ) -> web.Response:
        """Answer for a fault that strikes once the request was processed."""
        if fault == "drop_after":
            response = self._drop(request)
        elif fault == "malformed":
            response = self._malformed()
        elif fault == "malformed_http":
            response = self._not_http(request)
        elif fault == "hang_after_accept":
            await self._hold(request, math.inf)
            response = self._drop(request)
        return response

    def _early_fault(self, request: web.Request, fault: FaultName | None) -> web.Response | None:
        """Answer for a fault that strikes before the request is processed."""
        response: web.Response | None = None
        if fault == "drop_before":
            response = self._drop(request)
        elif fault == "server_error":
            response = self._error(500, _ERR_SERVER, "internal server error")
        elif fault == "unavailable":
            response = self._error(503, _ERR_SERVER, "service unavailable, try again")
        elif fault == "html_error":
            response = web.Response(status=502, text=_HTML_502, content_type="text/html")
        elif fault in {"rate_limited", "rate_limited_no_retry_after"}:
            response = self._too_many(
                self._scaled(1.0),
                whole=self.config.time_scale == 1,
                header=fault == "rate_limited",
            )
        elif fault == "stray_429":
            response = self._too_many(1.0, whole=True, header=False)
            response.headers["Retry-After"] = "1"
        elif fault == "error_200":
            response = _json(
                {
                    "error_code": _ERR_SERVER,
                    "error_message": "internal server error",
                    "detail": None,
                }
            )
        return response

    def _urls(self, request: web.Request, request_id: str) -> dict[str, str]:
        base = f"{request.scheme}://{request.host}/v1/requests/{request_id}"
        return {
            "status_url": f"{base}/status",
            "result_url": f"{base}/result",
            "cancel_url": f"{base}/cancel",
        }

    def _word(self, job: Job, endpoint: Literal["status", "result"]) -> str:
        faults = self.config.faults
        state = job.state
        word: str
        if state == "cancelled":
            word = "canceled" if faults.canceled_spelling else "cancelled"
        elif state in _UNFINISHED or endpoint == "result":
            word = state
        elif state == "failed":
            word = "failed" if faults.failed_on_status else "completed"
        else:
            word = "completed" if faults.status_completed_for_success else "succeeded"
        return word.upper() if faults.upper_case_status else word

    def _find(self, request: web.Request, token: str) -> Job | web.Response:
        job = self._sim.jobs.get(request.match_info["request_id"])
        if job is None:
            return self._error(404, _ERR_NOT_FOUND, "request not found")
        if job.token != token:
            return self._error(403, _ERR_FORBIDDEN, "this request belongs to another account")
        return job

    # -- the four endpoints --------------------------------------------------

    async def _on_submit(self, request: web.Request) -> web.Response:
        return await self._api(request, "submit", self._submit)

    async def _on_status(self, request: web.Request) -> web.Response:
        return await self._api(request, "status", self._status)

    async def _on_result(self, request: web.Request) -> web.Response:
        return await self._api(request, "result", self._result)

    async def _on_cancel(self, request: web.Request) -> web.Response:
        return await self._api(request, "cancel", self._cancel)

    def _tamper(self, answer: dict[str, object], fault: FaultName | None) -> web.Response:
        """Apply the faults that change a job answer's fields, then encode it."""
        faults = self.config.faults
        if fault == "foreign_request_id":
            answer["request_id"] = faults.foreign_id
        elif fault == "unknown_status" and "status" in answer:
            answer["status"] = faults.unknown_word
        return _json(answer)

    async def _submit(
        self, request: web.Request, body: bytes, token: str, fault: FaultName | None
    ) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id not in self.config.models:
            return self._error(404, _ERR_MODEL, f"unknown model id {model_id!r}")
        payload = await self._parse_payload(model_id, body)
        if isinstance(payload, web.Response):
            return payload
        job = self._new_job(model_id, payload, token)
        if self._balance is not None:
            if self._balance - job.cost < -1e-9:
                return self._error(
                    402,
                    _ERR_BALANCE,
                    f"insufficient balance: {self._balance:.4f} USD left, "
                    f"the request costs {job.cost:.4f} USD",
                )
            self._balance -= job.cost
        self._sim.add(job)
        self._accepted[job.key] += 1
        if fault in _AFTER_PROCESSING:
            job.submit_fault = fault
        faults = self.config.faults
        # Accepted and billed: only the answer waits, the window in which a
        # client that dies has paid for a job it never heard of.
        if faults.submit_delay > 0:
            await self._hold(request, self._scaled(faults.submit_delay))
        answer: dict[str, object] = {"request_id": job.request_id}
        answer.update(self._urls(request, job.request_id))
        if faults.submit_202:
            answer["status"] = "IN_QUEUE" if faults.upper_case_status else "in_queue"
        response = self._tamper(answer, fault)
        if faults.submit_202:
            response.set_status(202)
        return response

    async def _parse_payload(self, model_id: str, body: bytes) -> dict[str, object] | web.Response:
        """Return the submitted JSON object, or the 422 that rejects it."""
        try:
            payload = json.loads(body)
        except ValueError:
            return self._error(
                422,
                _ERR_INPUT,
                "the request body is not valid JSON",
                [{"loc": ["body"], "msg": "invalid JSON", "type": "json_invalid"}],
            )
        if not isinstance(payload, dict):
            return self._error(
                422,
                _ERR_INPUT,
                "the request body must be a JSON object",
                [{"loc": ["body"], "msg": "expected an object", "type": "dict_type"}],
            )
        if model_id == SEED_MODEL:
            problems = await check_seed_payload(payload, self._fetch)
            if problems:
                return self._error(
                    422,
                    _ERR_INPUT,
                    f"input does not match the schema: {problem_fields(problems)}",
                    problems,
                )
        return payload

    def _new_job(self, model_id: str, payload: dict[str, object], token: str) -> Job:
        config = self.config
        plan = config.plan(model_id, payload) if config.plan is not None else None
        run_time = plan.run_time if plan is not None else None
        if run_time is None:
            run_time = config.run_time.draw(self._rng)
            if payload.get("frames") == 241:
                run_time *= 2
        outcome: Outcome
        if plan is not None:
            outcome, error = plan.outcome, plan.error
        else:
            failed = config.failure_rate > 0 and self._rng.random() < config.failure_rate
            outcome = "failed" if failed else "succeeded"
            error = {"message": "content policy violation", "code": "E_MODEL"}
        return Job(
            request_id=str(uuid.uuid4()),
            model_id=model_id,
            payload=payload,
            token=token,
            created=self._clock(),
            duration=self._scaled(run_time),
            nominal_run_time=run_time,
            outcome=outcome,
            error=error if outcome == "failed" else None,
            cost=round(run_time * config.cost_per_second, 4),
            key=submit_key(model_id, payload),
        )

    async def _status(
        self, request: web.Request, _: bytes, token: str, fault: FaultName | None
    ) -> web.Response:
        job = self._find(request, token)
        if isinstance(job, web.Response):
            return job
        answer: dict[str, object] = {
            "request_id": job.request_id,
            "status": self._word(job, "status"),
        }
        position = self._sim.queue_position(job)
        if position is not None:
            answer["queue_position"] = position
        urls = self._urls(request, job.request_id)
        answer["status_url"] = urls["status_url"]
        answer["result_url"] = urls["result_url"]
        return self._tamper(answer, fault)

    async def _result(
        self, request: web.Request, _: bytes, token: str, fault: FaultName | None
    ) -> web.Response:
        job = self._find(request, token)
        if isinstance(job, web.Response):
            return job
        if job.state in _UNFINISHED and self.config.faults.result_not_ready:
            return self._error(400, _ERR_NOT_READY, "the request has not finished yet")
        answer: dict[str, object] = {
            "request_id": job.request_id,
            "status": self._word(job, "result"),
            "created_at": self._wall(job.created),
            "model_id": job.model_id,
        }
        if job.finished is not None:
            answer["finished_at"] = self._wall(job.finished)
        if job.state == "succeeded":
            answer["output"] = self._output(
                request, job.request_id, empty_name=fault == "empty_file_name"
            )
        elif job.state == "failed":
            answer["error"] = job.error
        include_cost = request.query.get("include_cost", "").lower() in {"true", "1"}
        if include_cost and job.state not in _UNFINISHED:
            answer["cost"] = 0.0 if job.state == "cancelled" else job.cost
        return self._tamper(answer, fault)

    def _output(
        self, request: web.Request, request_id: str, *, empty_name: bool
    ) -> dict[str, object]:
        base = f"{request.scheme}://{request.host}/_emulator/files/{request_id}"
        if empty_name:
            # The job's id moves up into a directory; the name left is "??" (or
            # "???"), which a careful client must not use as a file name.
            first, second = f"{base}/{_EMPTY_NAME}", f"{base}/{_EMPTY_NAME}%3F"
        else:
            first, second = f"{base}.mp4", f"{base}-2.mp4"
        if self.config.output == "videos":
            return {"videos": [first, second]}
        return {"video": first}

    async def _cancel(
        self, request: web.Request, _: bytes, token: str, fault: FaultName | None
    ) -> web.Response:
        job = self._find(request, token)
        if isinstance(job, web.Response):
            return job
        was_cancelled = job.state == "cancelled"
        if self._sim.cancel(job, self._clock()):
            if self._balance is not None:
                self._balance += job.cost
            was_cancelled = True
        word = self._word(job, "status")
        outcome = word.lower() if was_cancelled else "not_cancellable"
        answer: dict[str, object] = {
            "request_id": job.request_id,
            "status": word,
            "outcome": outcome,
        }
        response = self._tamper(answer, fault)
        response.set_status(202)
        return response

    async def _fetch(self, url: str) -> tuple[str, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise FetchError(f"HTTP {response.status}")
                chunks, total = [], 0
                async for chunk in response.content.iter_chunked(2**16):
                    total += len(chunk)
                    if total > _MAX_FETCH:
                        raise FetchError(f"larger than {_MAX_FETCH} bytes")
                    chunks.append(chunk)
                return response.headers.get("Content-Type", ""), b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(str(exc) or type(exc).__name__) from exc

    # -- files, images, admin ------------------------------------------------

    async def _on_file(self, request: web.Request) -> web.StreamResponse:
        self._note("file", request, None)
        name = request.match_info["name"]
        request_id = request.match_info.get("request_id")
        if request_id is None:
            match = _FILE_NAME.fullmatch(name)
            request_id = match["id"] if match else None
        job = self._advance().jobs.get(request_id) if request_id else None
        if job is None or job.state != "succeeded":
            return web.Response(status=404, text="no such file")
        faults = self.config.faults
        if faults.big_file is None and faults.slow_file is None:
            return web.Response(body=fake_mp4(name), content_type="video/mp4")
        return await self._stream_file(request, name)

    async def _stream_file(self, request: web.Request, name: str) -> web.StreamResponse:
        """Send an output file in pieces: big (``big_file``), slow (``slow_file``) or both."""
        faults = self.config.faults
        # Bytes per real second, and pieces of about 1/20 s each at that pace.
        pace = faults.slow_file / self.config.time_scale if faults.slow_file else None
        piece = _FILE_PIECE if pace is None else max(1, min(_FILE_PIECE, int(pace / 20)))
        if faults.big_file is not None:
            size, pieces = faults.big_file, fake_mp4_stream(faults.big_file, piece)
        else:
            data = fake_mp4(name)
            size = len(data)
            pieces = (data[at : at + piece] for at in range(0, size, piece))
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = size
        await response.prepare(request)
        try:
            for chunk in pieces:
                if pace is not None:
                    await self._sleep(len(chunk) / pace)
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading: nothing left to send it
        return response

    async def _on_image(self, request: web.Request) -> web.Response:
        self._note("image", request, None)
        match = _IMAGE_NAME.fullmatch(request.match_info["name"])
        size_text = request.query.get("size")
        if match is None or (size_text is not None and not size_text.isdigit()):
            return web.Response(status=404, text="no such image")
        width, height = int(match["w"]), int(match["h"])
        size = int(size_text) if size_text is not None else None
        png = match["ext"] == "png"
        try:
            data = (sample_png if png else sample_jpeg)(width, height, size=size)
        except ValueError as exc:
            return web.Response(status=404, text=str(exc))
        return web.Response(body=data, content_type="image/png" if png else "image/jpeg")

    async def _on_stats(self, request: web.Request) -> web.Response:
        self._note("admin", request, None)
        return _json(self.stats())

    async def _on_jobs(self, request: web.Request) -> web.Response:
        self._note("admin", request, None)
        jobs = [
            {
                "request_id": job.request_id,
                "state": job.state,
                "outcome": job.outcome,
                "created": job.created,
                "started": job.started,
                "finished": job.finished,
            }
            for job in self._advance()
        ]
        return _json(jobs)

    async def _on_reset(self, request: web.Request) -> web.Response:
        self._note("admin", request, None)
        self.reset_stats()
        return _json({"reset": True})

    async def _on_inject(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._note("admin", request, body)
        try:
            order = json.loads(body)
            kind, fault = order["kind"], order["fault"]
            times = order.get("times", 1)
            if kind not in FAULT_TARGETS or fault not in FAULT_NAMES or not _is_count(times):
                raise ValueError(order)  # noqa: TRY301 - one answer for every bad order
            self.inject(kind, fault, times)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _json(
                {
                    "error": 'send {"kind": ..., "fault": ..., "times": N}',
                    "detail": str(exc),
                },
                400,
            )
        return _json({"pending_faults": self._faults.pending()})

    async def _on_accepted(self, request: web.Request) -> web.Response:
        self._note("admin", request, None)
        return _json(self.accepted_submits())

    async def _on_unknown(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._note("unknown", request, body)
        return self._error(404, _ERR_NOT_FOUND, f"no route {request.method} {request.path}")
