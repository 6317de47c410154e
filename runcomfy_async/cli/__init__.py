"""The ``runcomfy-async`` command: batch runs, single calls, and the emulator.

``main`` parses the command line and hands each subcommand to its module:
``run`` to :mod:`._run` (input from :mod:`._batch`, lines from
:mod:`._results`, resuming from :mod:`._resume`, everything said on stderr
by :mod:`._report`), ``status``, ``result``, ``cancel`` and ``wait`` to
:mod:`._single`, ``jobs`` (a journal's jobs) to :mod:`._jobs`, ``emulator``
to :mod:`._emulator`.

Exit codes: 0 every job succeeded; 1 a job or a call failed; 2 bad input or
usage (nothing was submitted); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import anyio

from runcomfy_async._config import base_url_from_env, normalize_base_url, token_from_env

from ._base import EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from ._batch import lines_from_options, read_batch
from ._emulator import cmd_emulator
from ._jobs import list_jobs
from ._parser import build_parser
from ._report import Reporter, choose_mode
from ._results import check_output
from ._resume import default_journal
from ._run import RunPlan, run
from ._single import single_calls, wait

__all__ = ["main"]

DEMO_JOBS: Final = 8
_TOP_LEVEL: Final = frozenset({"-h", "--help", "--version"})
_NOT_CONFIGURED: Final = (
    "no RunComfy token found: set RUNCOMFY_API_TOKEN (RUNCOMFY_TOKEN and RUNCOMFY_API_KEY "
    "are read too)"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:
        return cmd_emulator(args_list[1:])
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in _TOP_LEVEL):
        args_list = ["run", *args_list]  # "run" is the default command
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "run":
        mode, hint = choose_mode(quiet=args.quiet, log_format=args.log_format)
    else:
        mode, hint = "text", None
    verbose = bool(getattr(args, "verbose", False))  # `jobs` has no -v
    reporter = Reporter(mode, verbose=verbose)
    if hint is not None:
        reporter.say(hint)
    try:
        with _log_to(reporter, verbose=verbose):
            return _dispatch(args, reporter)
    except UsageError as exc:
        for message in exc.messages:
            reporter.error(message)
        return EXIT_USAGE
    except KeyboardInterrupt:
        reporter.warn("interrupted")
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace, reporter: Reporter) -> int:
    if args.command == "run":
        return anyio.run(run, _plan(args, reporter), reporter)
    if args.command == "jobs":
        return list_jobs(args.journal, as_json=args.json)
    return _single(args, reporter)


def _base_url(url: str | None) -> str:
    try:
        return normalize_base_url(url) if url else base_url_from_env()
    except ValueError as exc:
        raise UsageError(f"--base-url or $RUNCOMFY_MODEL_API_BASE_URL: {exc}") from exc


def _plan(args: argparse.Namespace, reporter: Reporter) -> RunPlan:
    """Decide what to run and where; raise UsageError on bad usage."""
    if args.emulator and args.base_url:
        raise UsageError("--emulator and --base-url cannot be used together")
    if args.batch is not None and (
        args.prompt is not None or args.image is not None or args.count is not None
    ):
        raise UsageError("--batch cannot be combined with --prompt, --image or --count")
    given = any(value is not None for value in (args.prompt, args.image, args.count, args.batch))
    if not given and not args.base_url:
        emulated = True
        reporter.say(
            f"no jobs given: running a demo batch of {DEMO_JOBS} jobs against the built-in "
            "emulator; nothing is billed"
        )
    elif args.emulator:
        emulated = True
    elif token_from_env() is None:
        # A user's own jobs never fall back silently to the emulator: a
        # misspelt variable would produce results that look real.
        raise UsageError(
            f"{_NOT_CONFIGURED}, or add --emulator to try the batch on the built-in emulator "
            "(nothing is billed)"
        )
    elif not given:
        raise UsageError("no jobs given: use --prompt and --image, or --batch FILE")
    else:
        emulated = False
    base_url = None if emulated else _base_url(args.base_url)
    output = Path(args.output) if args.output else None
    check_output(output)
    journal = _journal_path(args, output, emulated=emulated)
    if args.batch is not None:
        lines, form_errors = read_batch(Path(args.batch), seed=args.seed, frames=args.frames)
    else:
        count = args.count if args.count is not None else (1 if given else DEMO_JOBS)
        lines = lines_from_options(
            prompt=args.prompt,
            image=args.image,
            count=count,
            seed=args.seed,
            frames=args.frames,
            cwd=Path.cwd(),
        )
        form_errors = []
    from runcomfy_async import Limits  # noqa: PLC0415 - keeps the import list short

    return RunPlan(
        lines=lines,
        form_errors=form_errors,
        emulated=emulated,
        token=None,
        base_url=base_url,
        limits=Limits(
            max_jobs_in_flight=args.max_jobs_in_flight,
            max_concurrent_requests=args.max_concurrent_requests,
        ),
        timeout=args.timeout,
        output=output,
        download=_download_dir(args.download),
        progress_interval=args.progress_interval,
        dry_run=args.dry_run,
        journal=journal,
        resubmit_uncertain=args.resubmit_uncertain,
    )


def _journal_path(args: argparse.Namespace, output: Path | None, *, emulated: bool) -> Path | None:
    """Return the journal: --journal, else beside --output (not for the built-in emulator)."""
    if args.journal:
        journal = Path(args.journal)
        if journal.is_dir() or not journal.parent.is_dir():
            raise UsageError(
                f"--journal: {journal} is a folder or its folder does not exist; give a file "
                "in an existing folder"
            )
        return journal
    if args.no_journal or output is None or emulated or args.dry_run:
        # The built-in emulator's jobs die with the process: nothing to resume.
        return None
    return default_journal(output)


def _download_dir(text: str | None) -> Path | None:
    if text is None:
        return None
    folder = Path(text)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--download: cannot use {folder}: {exc.strerror or exc}") from exc
    return folder


def _single(args: argparse.Namespace, reporter: Reporter) -> int:
    if token_from_env() is None:
        # Never the emulator here: it would not know the job.
        raise UsageError(_NOT_CONFIGURED)
    request_ids = [rid.strip() for rid in args.request_ids]
    if not all(request_ids):
        raise UsageError("a request id must not be empty")
    base_url = _base_url(args.base_url)
    if args.command == "wait":
        return anyio.run(
            lambda: wait(request_ids, token=None, base_url=base_url, reporter=reporter)
        )
    return anyio.run(
        lambda: single_calls(
            args.command, request_ids, token=None, base_url=base_url, reporter=reporter
        )
    )


@contextlib.contextmanager
def _log_to(reporter: Reporter, *, verbose: bool) -> Iterator[None]:
    """Send the library's log through the reporter: warnings always, more with -v.

    Without this, Python's last-resort handler would print the library's
    warnings (a failed journal, a failed remote cancel) past the display.
    """

    class _ToReporter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = f"{record.levelname.lower()}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None and verbose:
                text += f" ({record.exc_info[1]!r})"
            if record.levelno >= logging.WARNING:
                reporter.warn(text)
            else:
                reporter.say(text)

    logger = logging.getLogger("runcomfy_async")
    handler = _ToReporter(logging.INFO if verbose else logging.WARNING)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
