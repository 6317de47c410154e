"""The ``runcomfy-async`` command: batch runs, single calls, and the emulator.

``runcomfy-async run`` checks every input first (nothing is sent if any line
is bad), then submits the whole batch through one :class:`RunComfy` session.
Progress goes to stderr; results go to stdout (or ``--output``) as JSON lines.
Without an API token it runs against the built-in emulator, so a first run
on a fresh machine costs nothing.

Exit codes: 0 every job succeeded; 1 a job or a call failed; 2 bad input or
usage (nothing was submitted); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
import attrs

from ._client import RunComfy
from ._config import (
    Limits,
    base_url_from_env,
    normalize_base_url,
    package_version,
    token_from_env,
)
from ._errors import (
    DownloadError,
    RunComfyError,
    ValidationError,
)
from ._events import Event, JobSubmitted
from ._job import Job
from ._models import (
    Cancelled,
    CancelOutcome,
    Completed,
    Failed,
    ImageToVideo,
    JobResult,
    JobStatus,
    Pending,
    Queued,
    Running,
    Succeeded,
)

PROG: Final = "runcomfy-async"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

DEMO_JOBS: Final = 8
DOWNLOADS_AT_ONCE: Final = 4
DEMO_PROMPTS: Final = (
    "a paper boat drifts down a rain-soaked street, slow dolly shot",
    "the camera pushes in as morning light fills a quiet kitchen",
    "waves roll onto a black sand beach, drone shot at golden hour",
    "a cat stretches on a sunny windowsill, then looks at the camera",
    "leaves swirl around a lamp post in an autumn wind",
    "steam rises from a cup of coffee on a wooden table, macro shot",
    "city lights flicker on as dusk falls, time-lapse",
    "a kite climbs into a clear blue sky over a green hill",
)
EMULATOR_TIME_SCALE: Final = 0.01
EMULATOR_SLOTS: Final = 4
SAMPLE_IMAGE_PATH: Final = "/_emulator/images/1280x720.png"
MAX_ERRORS_SHOWN: Final = 20

_TOP_LEVEL: Final = frozenset({"-h", "--help", "--version"})
_BATCH_KEYS: Final = frozenset({"prompt", "image", "image_url", "seed", "frames"})
# A URL scheme has two letters or more, so "C:\\images\\a.png" stays a path.
_URL: Final = re.compile(r"^[a-z][a-z0-9+.-]+:", re.IGNORECASE)


class _InputError(Exception):
    """One bad input, already phrased for the user."""


# -- reading the input ----------------------------------------------------------


@attrs.frozen
class _Spec:
    """One job as given on the command line or on one line of a batch file."""

    where: str
    prompt: Any
    image: Any
    seed: Any
    frames: Any
    base_dir: Path


def _read_batch(path: Path, seed: int, frames: int) -> tuple[list[_Spec], list[str]]:
    """Parse a JSON-lines batch file; return its jobs and its errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot read the batch file: {exc}"]
    specs: list[_Spec] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: not a JSON object ({exc.msg}, column {exc.colno})")
            continue
        if not isinstance(item, dict):
            errors.append(f"{where}: not a JSON object, but {type(item).__name__}")
            continue
        unknown = sorted(set(item) - _BATCH_KEYS)
        if unknown:
            errors.append(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                "use prompt, image, seed, frames"
            )
            continue
        if "image" in item and "image_url" in item:
            errors.append(f"{where}: give either 'image' or 'image_url', not both")
            continue
        specs.append(
            _Spec(
                where=where,
                prompt=item.get("prompt"),
                image=item.get("image", item.get("image_url")),
                seed=item.get("seed", seed),
                frames=item.get("frames", frames),
                base_dir=path.parent,
            )
        )
    if not specs and not errors:
        errors.append(f"{path}: the batch file holds no jobs")
    return specs, errors


def _image_reference(spec: _Spec, sample_image: str | None, cache: dict[Path, str]) -> str:
    """Return an image URL or data URI for *spec*; read local files once."""
    image = spec.image
    if image is None:
        if sample_image is None:
            raise _InputError("image: is required (an https:// URL or a local JPEG or PNG)")
        return sample_image
    if not isinstance(image, str) or not image.strip():
        raise _InputError("image: must be a non-empty string (a URL or a file path)")
    if _URL.match(image):
        return image
    path = (spec.base_dir / Path(image).expanduser()).resolve()
    if path not in cache:
        if not path.is_file():
            raise _InputError(f"image: no such file: {path}")
        try:
            # Reads, checks and encodes the image; the prompt is checked later.
            cache[path] = ImageToVideo.from_file(path, prompt="-").image_url
        except OSError as exc:
            raise _InputError(f"image: cannot read {path}: {exc.strerror or exc}") from exc
        except ValidationError as exc:
            raise _InputError(f"image {path}: {exc.message.partition(': ')[2]}") from exc
    return cache[path]


def _build_one(
    spec: _Spec, demo_prompt: str | None, sample_image: str | None, images: dict[Path, str]
) -> ImageToVideo | str:
    """Return the checked request of *spec*, or its error with its place."""
    try:
        prompt = spec.prompt if spec.prompt is not None else demo_prompt
        if prompt is None:
            raise _InputError("prompt: is required")  # noqa: TRY301 - phrased like the rest
        image_url = _image_reference(spec, sample_image, images)
        return ImageToVideo(prompt=prompt, image_url=image_url, seed=spec.seed, frames=spec.frames)
    except (_InputError, ValidationError) as exc:
        return f"{spec.where}: {exc}"


def _build(
    specs: Sequence[_Spec], sample_image: str | None, *, demo_prompts: bool
) -> tuple[list[ImageToVideo], list[str]]:
    """Turn every spec into a checked request; collect every error with its place."""
    images: dict[Path, str] = {}
    # Equal specs (--count N, repeated lines) share one request object, so an
    # image is read and checked once, not once a job.
    built: dict[str, ImageToVideo | str] = {}
    requests: list[ImageToVideo] = []
    errors: list[str] = []
    for index, spec in enumerate(specs):
        demo = DEMO_PROMPTS[index % len(DEMO_PROMPTS)] if demo_prompts else None
        key = json.dumps([spec.where, spec.prompt, demo, spec.image, spec.seed, spec.frames])
        if key not in built:
            built[key] = _build_one(spec, demo, sample_image, images)
        outcome = built[key]
        if isinstance(outcome, ImageToVideo):
            requests.append(outcome)
        elif outcome not in errors:
            errors.append(outcome)
    return requests, errors


# -- reporting ------------------------------------------------------------------


def _say(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def _line(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _record(index: int, job: Job, saved: Path | str | None = None) -> dict[str, Any]:
    """Return the JSON line of one finished job (*saved*: its file, or why not)."""
    error = job.exception()
    result = job.result() if error is None else None
    return {
        "index": index,
        "request_id": job.request_id,
        "status": job.outcome,
        "video_url": result.video_url if result else None,
        "urls": list(result.urls) if result else [],
        "cost": result.cost if result else None,
        "error": f"{type(error).__name__}: {error}" if error is not None else None,
        "file": str(saved) if isinstance(saved, Path) else None,
        "download_error": saved if isinstance(saved, str) else None,
    }


def _counts(jobs: Sequence[Job]) -> dict[str, int]:
    counts = dict.fromkeys(("waiting", "queued", "running", "succeeded", "failed"), 0)
    for job in jobs:
        if job.done():
            counts["succeeded" if job.exception() is None else "failed"] += 1
        elif job.request_id is None:
            counts["waiting"] += 1  # not sent yet: not billed
        elif isinstance(job.state, (Pending, Queued)):
            counts["queued"] += 1  # accepted; Pending until its first poll
        else:
            counts["running"] += 1
    return counts


def _summary(client: RunComfy, jobs: Sequence[Job]) -> str:
    counts = " ".join(f"{name}={n}" for name, n in _counts(jobs).items())
    return f"progress  {counts}  requests={client.stats.total_requests}"


@attrs.define
class _Results:
    """Writes one JSON line per finished job, each exactly once, flushed."""

    out: TextIO
    index: dict[Job, int]
    written: set[int] = attrs.field(factory=set)
    cost: float = 0.0

    def write(self, job: Job, saved: Path | str | None = None) -> None:
        index = self.index[job]
        if index in self.written or not job.done():
            return
        self.written.add(index)
        record = _record(index, job, saved)
        self.cost += record["cost"] or 0.0
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
        detail = record["video_url"] if record["error"] is None else record["error"]
        _line(f"finished  #{index}  {record['status']}  {job.request_id or '-'}  {detail}")
        if record["file"] or record["download_error"]:
            _line(f"saved     #{index}  {record['file'] or record['download_error']}")


# -- run ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _RunPlan:
    specs: list[_Spec]
    emulator: str | None  # why the emulator is used, or None for the real API
    demo_prompts: bool
    base_url: str | None
    limits: Limits
    timeout: float | None
    output: Path | None
    download: Path | None
    progress_interval: float


def _check_base_url(url: str | None) -> str:
    """Return the API host, ``--base-url`` or the environment's, checked up front."""
    try:
        return normalize_base_url(url) if url else base_url_from_env()
    except ValueError as exc:
        raise _InputError(f"--base-url or $RUNCOMFY_MODEL_API_BASE_URL: {exc}") from exc


def _check_options(args: argparse.Namespace) -> Limits:
    """Refuse option combinations and values that cannot work."""
    if args.emulator and args.base_url:
        raise _InputError("--emulator and --base-url cannot be used together")
    if args.batch is not None and (
        args.prompt is not None or args.image is not None or args.count is not None
    ):
        raise _InputError("--batch cannot be combined with --prompt, --image or --count")
    if args.timeout is not None and args.timeout <= 0:
        raise _InputError("--timeout must be a positive number of seconds")
    if args.progress_interval <= 0:
        raise _InputError("--progress-interval must be a positive number of seconds")
    return Limits(
        max_jobs_in_flight=args.max_jobs_in_flight,
        max_concurrent_requests=args.max_concurrent_requests,
    )


def _emulator_reason(args: argparse.Namespace, *, given: bool) -> str | None:
    """Say why the built-in emulator is used, or return None for the real API."""
    if not given and not args.base_url:
        return (
            f"no jobs given: running a demo batch of {DEMO_JOBS} jobs against the "
            "built-in emulator; nothing is billed"
        )
    if args.emulator:
        return "--emulator: running against the built-in emulator; nothing is billed"
    if token_from_env() is None:
        if args.base_url:
            raise _InputError(
                "no RunComfy token found: set RUNCOMFY_API_TOKEN (the built-in emulator "
                "is used without a token only when --base-url is not given)"
            )
        return "no RunComfy token found: running against the built-in emulator; nothing is billed"
    if not given:
        raise _InputError("no jobs given: use --prompt and --image, or --batch FILE.jsonl")
    return None


def _plan_run(args: argparse.Namespace) -> _RunPlan:
    """Decide what to run and where; raise _InputError on bad input or usage."""
    limits = _check_options(args)
    given = any(value is not None for value in (args.prompt, args.image, args.count, args.batch))
    emulator = _emulator_reason(args, given=given)
    base_url = None if emulator is not None else _check_base_url(args.base_url)
    if args.batch is not None:
        specs, errors = _read_batch(Path(args.batch), args.seed, args.frames)
        if errors:
            raise _InputError("\n".join(errors))
    else:
        count = args.count if args.count is not None else (1 if given else DEMO_JOBS)
        specs = [
            _Spec(
                where="--prompt/--image",
                prompt=args.prompt,
                image=args.image,
                seed=args.seed,
                frames=args.frames,
                base_dir=Path.cwd(),
            )
            for _ in range(count)
        ]
    return _RunPlan(
        specs=specs,
        emulator=emulator,
        demo_prompts=emulator is not None,
        base_url=base_url,
        limits=limits,
        timeout=args.timeout,
        output=Path(args.output) if args.output else None,
        download=_download_dir(args.download),
        progress_interval=args.progress_interval,
    )


def _download_dir(text: str | None) -> Path | None:
    if text is None:
        return None
    folder = Path(text)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _InputError(f"--download: cannot use {folder}: {exc.strerror}") from exc
    return folder


async def _save(
    client: RunComfy, job: Job, folder: Path, results: _Results, limiter: anyio.CapacityLimiter
) -> None:
    """Download a succeeded job's video into *folder*, then write its line."""
    saved: Path | str | None = None
    if job.exception() is None:
        async with limiter:
            try:
                saved = await client.download(job.result(), folder)
            except DownloadError as exc:
                saved = str(exc)
    results.write(job, saved)


def _report_errors(errors: Sequence[str]) -> None:
    for error in errors[:MAX_ERRORS_SHOWN]:
        _say(f"error: {error}")
    if len(errors) > MAX_ERRORS_SHOWN:
        _say(f"... and {len(errors) - MAX_ERRORS_SHOWN} more error(s)")
    _say("nothing was submitted")


@contextlib.contextmanager
def _open_output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8") as out:
        yield out


async def _watch_signals(scope: anyio.CancelScope, interrupted: list[bool]) -> None:
    """Turn the first Ctrl-C (or SIGTERM) into an orderly stop of the batch."""
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        with receiver as signals:
            async for _ in signals:
                interrupted.append(True)
                _say("interrupted: cancelling queued jobs (Ctrl-C again to quit at once)")
                scope.cancel()
                break
    except (NotImplementedError, ValueError, RuntimeError):
        # No signal handlers here (Windows, or not the main thread): Ctrl-C
        # then arrives as a cancellation of the whole run, handled just the same.
        await anyio.sleep_forever()


async def _report_progress(client: RunComfy, jobs: Sequence[Job], every: float) -> None:
    while True:
        await anyio.sleep(every)
        _line(_summary(client, jobs))


async def _run(plan: _RunPlan) -> int:
    async with contextlib.AsyncExitStack() as stack:
        token: str | None = None
        base_url = plan.base_url
        sample_image: str | None = None
        if plan.emulator is not None:
            _say(plan.emulator)
            from .testing import FakeRunComfy  # noqa: PLC0415 - loaded only when used

            fake = await stack.enter_async_context(
                FakeRunComfy(time_scale=EMULATOR_TIME_SCALE, slots=EMULATOR_SLOTS, record=False)
            )
            # The emulator's own token: a real one is never sent to it.
            token, base_url = fake.config.token, fake.base_url
            sample_image = fake.base_url + SAMPLE_IMAGE_PATH

        requests, errors = _build(plan.specs, sample_image, demo_prompts=plan.demo_prompts)
        if errors:
            _report_errors(errors)
            return EXIT_USAGE
        return await _submit_and_collect(plan, requests, token, base_url)


async def _submit_and_collect(
    plan: _RunPlan, requests: list[ImageToVideo], token: str | None, base_url: str | None
) -> int:
    index: dict[Job, int] = {}

    def on_event(event: Event) -> None:
        # Printed the moment the server accepts a job, so that even a crash
        # right after never leaves a billed job unknown.
        if isinstance(event, JobSubmitted):
            _line(f"accepted  #{index.get(event.job, '?')}  {event.job.request_id}")

    started = time.monotonic()
    interrupted: list[bool] = []
    # Finished jobs arrive through a stream that stays open until the client
    # has closed, so a job settled by the close can still be delivered.
    send, receive = anyio.create_memory_object_stream[Job](math.inf)
    with _open_output(plan.output) as out, send, receive:
        results = _Results(out, index)
        client = RunComfy(token, base_url=base_url, limits=plan.limits, hooks=[on_event])
        jobs: list[Job] = []
        try:
            async with client:
                jobs = client.submit_many(requests, timeout=plan.timeout)
                index.update((job, i) for i, job in enumerate(jobs))
                for job in jobs:
                    job.add_done_callback(send.send_nowait)
                _say(
                    f"{len(jobs)} job(s) checked and queued; at most "
                    f"{plan.limits.max_jobs_in_flight} in flight, "
                    f"{plan.limits.max_concurrent_requests} requests at once"
                )
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as group:
                        group.start_soon(_watch_signals, scope, interrupted)
                        group.start_soon(_report_progress, client, jobs, plan.progress_interval)
                        limiter = anyio.CapacityLimiter(DOWNLOADS_AT_ONCE)
                        async with anyio.create_task_group() as saving:
                            for _ in jobs:
                                job = await receive.receive()
                                if plan.download is None:
                                    results.write(job)
                                else:
                                    # Output links expire: fetch each one as
                                    # soon as its job is done.
                                    saving.start_soon(
                                        _save, client, job, plan.download, results, limiter
                                    )
                        group.cancel_scope.cancel()
                # Leaving the client now cancels queued jobs remotely and
                # reports those that run on.
        finally:
            # Runs on Ctrl-C too: every job the close settled gets its line.
            for job in jobs:
                results.write(job)
            for job in client.running_on:
                _say(
                    f"still running on the server (billed): {job.request_id}; "
                    f"follow it with: {PROG} result {job.request_id}"
                )
    outcomes = Counter(job.outcome for job in jobs if job.done())
    stats = client.stats
    per_job = stats.total_requests / len(jobs) if jobs else 0.0
    tally = ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items())) or "no jobs"
    cost = f"; cost ${results.cost:.2f}" if results.cost else ""
    if cost and plan.emulator is not None:
        cost += " (emulated: nothing was billed)"
    _say(
        f"{tally} in {time.monotonic() - started:.1f} s; {stats.total_requests} requests "
        f"({per_job:.1f} per job){cost}"
    )
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcomes["succeeded"] == len(jobs) else EXIT_FAILED


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        plan = _plan_run(args)
    except _InputError as exc:
        _report_errors(str(exc).splitlines())
        return EXIT_USAGE
    return anyio.run(_run, plan)


# -- single calls ---------------------------------------------------------------


def _result_json(result: JobResult) -> dict[str, Any]:
    return {
        "video_url": result.video_url,
        "video_urls": list(result.video_urls),
        "image_urls": list(result.image_urls),
        "urls": list(result.urls),
        "cost": result.cost,
        "model_id": result.model_id,
        "created_at": result.created_at.isoformat() if result.created_at else None,
        "finished_at": result.finished_at.isoformat() if result.finished_at else None,
        "output": dict(result.output),
    }


def _state_json(request_id: str, state: JobStatus) -> dict[str, Any]:
    answer: dict[str, Any] = {"request_id": request_id}
    match state:
        case Queued(position=position):
            answer.update(status="queued", queue_position=position)
        case Running():
            answer.update(status="running")
        case Completed():
            answer.update(status="completed")
        case Succeeded(result=result):
            answer.update(status="succeeded", **_result_json(result))
        case Failed(message=message, error=error):
            answer.update(status="failed", message=message, error=error)
        case Cancelled():
            answer.update(status="cancelled")
        case Pending():  # pragma: no cover - the server never reports this
            answer.update(status="pending")
    return answer


def _cancel_json(outcome: CancelOutcome) -> dict[str, Any]:
    return {
        "request_id": outcome.request_id,
        "cancelled": outcome.cancelled,
        "status": outcome.status,
        "outcome": outcome.outcome,
    }


async def _single_call(command: str, request_id: str, base_url: str | None) -> dict[str, Any]:
    async with RunComfy(base_url=base_url) as client:
        if command == "status":
            return _state_json(request_id, await client.api.status(request_id))
        if command == "result":
            return _state_json(request_id, await client.api.result(request_id))
        outcome = await client.api.cancel(request_id)
        if not outcome.cancelled:
            _say(
                f"{request_id} is not cancellable (status {outcome.status}): "
                "it runs on and is billed"
            )
        return _cancel_json(outcome)


def _cmd_single(args: argparse.Namespace) -> int:
    if token_from_env() is None:
        _say("error: no RunComfy token found: set RUNCOMFY_API_TOKEN")
        return EXIT_USAGE
    if not args.request_id.strip():
        _say("error: the request id must not be empty")
        return EXIT_USAGE
    try:
        base_url = _check_base_url(args.base_url)
    except _InputError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    try:
        answer = anyio.run(_single_call, args.command, args.request_id, base_url)
    except RunComfyError as exc:
        _say(f"error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return EXIT_OK


# -- the emulator -----------------------------------------------------------------


def _cmd_emulator(argv: Sequence[str]) -> int:
    from .testing.__main__ import main as emulator_main  # noqa: PLC0415 - only when used

    try:
        return emulator_main(argv)
    except SystemExit as exc:  # its --help and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


# -- the parser -----------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Run many RunComfy image-to-video jobs at once, safely. Without a token "
            "(RUNCOMFY_API_TOKEN) it runs against a built-in emulator; nothing is billed."
        ),
        epilog="Run a subcommand with --help for its options. Bare 'runcomfy-async' runs a demo.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a batch of jobs (the default; a demo batch when given nothing)",
        description=(
            "Check every input, then submit the batch and follow each job to its end. "
            "Results: one JSON line per job on stdout (or --output). Progress: stderr. "
            "Exit 0 if every job succeeded, 1 if any failed, 2 on bad input (then "
            "nothing is submitted), 130 on Ctrl-C."
        ),
    )
    add = run.add_argument
    add("--prompt", metavar="TEXT", help="what should happen in the video (one job)")
    add("--image", metavar="URL_OR_PATH", help="first frame: an https:// URL or a local JPEG/PNG")
    add("--count", type=_positive_int, metavar="N", help="submit the --prompt/--image job N times")
    add(
        "--batch",
        metavar="FILE.jsonl",
        help='one JSON object a line: {"prompt": ..., "image": ..., "seed": ..., "frames": ...}; '
        "relative image paths are read from the batch file's folder",
    )
    add(
        "--frames",
        type=int,
        choices=(121, 241),
        default=121,
        help="121 (~5 s, default) or 241 (~10 s); the default for batch lines too",
    )
    add(
        "--seed",
        type=int,
        default=-1,
        help="-1 for random (default), or 0 to 2**32-1; the default for batch lines too",
    )
    add(
        "--max-jobs-in-flight",
        type=_positive_int,
        default=Limits().max_jobs_in_flight,
        metavar="N",
        help="jobs submitted and not finished at once; the rest wait unsent (default %(default)s)",
    )
    add(
        "--max-concurrent-requests",
        type=_positive_int,
        default=Limits().max_concurrent_requests,
        metavar="N",
        help="HTTP requests at once (default %(default)s)",
    )
    add("--timeout", type=float, metavar="SECONDS", help="deadline for the whole batch")
    add(
        "--download",
        metavar="DIR",
        help="save each video into DIR as soon as its job succeeds (streamed; only from "
        "RunComfy's hosts; the token is never sent there)",
    )
    add("--output", metavar="FILE.jsonl", help="write the results here instead of stdout")
    add("--emulator", action="store_true", help="use the built-in emulator even with a token")
    add("--base-url", metavar="URL", help="API host (default: $RUNCOMFY_MODEL_API_BASE_URL)")
    add(
        "--progress-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often to print the progress line (default 2)",
    )
    add("-v", "--verbose", action="store_true", help="also log retries and cancels")

    for name, text in (
        ("status", "print a job's status as JSON"),
        ("result", "print a job's result (or its current state) as JSON"),
        ("cancel", "cancel a queued job; a running one runs on and is billed"),
    ):
        single = commands.add_parser(name, help=text, description=text)
        single.add_argument("request_id", metavar="REQUEST_ID")
        single.add_argument(
            "--base-url", metavar="URL", help="API host (default: $RUNCOMFY_MODEL_API_BASE_URL)"
        )
        single.add_argument("-v", "--verbose", action="store_true", help="also log retries")

    commands.add_parser(
        "emulator",
        help="serve the emulator (options: runcomfy-async emulator --help)",
        add_help=False,
    )
    return parser


@contextlib.contextmanager
def _verbose_logging(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    logger = logging.getLogger("runcomfy_async")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:
        return _cmd_emulator(args_list[1:])
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in _TOP_LEVEL):
        args_list = ["run", *args_list]  # "run" is the default command
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with _verbose_logging(args.verbose):
            if args.command == "run":
                return _cmd_run(args)
            return _cmd_single(args)
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
