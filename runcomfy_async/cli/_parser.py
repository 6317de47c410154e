"""The command line's grammar: every subcommand and option, with its help."""

from __future__ import annotations

import argparse

from runcomfy_async import Limits, __version__

from ._base import PROG
from ._emulator import SLOTS, TIME_SCALE


def positive_int(text: str) -> int:
    """Parse a whole number of 1 or more (an argparse type)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def positive_float(text: str) -> float:
    """Parse a number of seconds above 0 (an argparse type)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _add_base_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="API host (default: $RUNCOMFY_MODEL_API_BASE_URL, else RunComfy's)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also log retries")


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="run a batch of jobs (the default; a demo batch when given nothing)",
        description=(
            "Check every input, then submit the batch and follow each job to its end. "
            "Results: one JSON line per job on stdout (or --output), each saying whether "
            "the job was billed. Progress: stderr. Exit 0 if every job succeeded, 1 if any "
            "did not, 2 on bad input or usage (then nothing is submitted), 130 on Ctrl-C."
        ),
    )
    add = run.add_argument
    add("--prompt", metavar="TEXT", help="what should happen in the video (one job)")
    add("--image", metavar="URL_OR_PATH", help="first frame: an https:// URL or a local JPEG/PNG")
    add("--count", type=positive_int, metavar="N", help="submit the --prompt/--image job N times")
    add(
        "--batch",
        metavar="FILE",
        help="many jobs: FILE.jsonl (one JSON object a line) or FILE.csv (a header row); "
        "fields: key, prompt, image, seed, frames; relative image paths are read from "
        "the file's folder",
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
        type=positive_int,
        default=Limits().max_jobs_in_flight,
        metavar="N",
        help="jobs submitted and not finished at once; the rest wait unsent (default %(default)s)",
    )
    add(
        "--max-concurrent-requests",
        type=positive_int,
        default=Limits().max_concurrent_requests,
        metavar="N",
        help="HTTP requests at once (default %(default)s)",
    )
    add(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="a deadline for the whole batch: unsent and queued jobs are dropped (not billed); "
        "running ones are billed and followed to their end",
    )
    add(
        "--download",
        metavar="DIR",
        help="save each video into DIR as soon as its job succeeds (as KEY.mp4 when the line "
        "has a key; only from RunComfy's hosts; the token is never sent there)",
    )
    add(
        "--output",
        metavar="FILE",
        help="append the result lines to FILE instead of stdout; its journal is kept beside "
        "it (FILE.journal), so the same command run again resumes the batch",
    )
    journal = run.add_mutually_exclusive_group()
    journal.add_argument(
        "--journal",
        metavar="FILE",
        help="record every paid call in FILE (SQLite) before it leaves (default with "
        "--output: FILE.journal beside it); run the same batch again with the same journal "
        "to resume it without paying twice",
    )
    journal.add_argument(
        "--no-journal",
        action="store_true",
        help="keep no journal: a batch run again is paid for again; --output is replaced",
    )
    add(
        "--resubmit-uncertain",
        action="store_true",
        help="on resume, send again the jobs whose submit's answer was lost (each may then be "
        "paid twice: check RunComfy's dashboard first)",
    )
    add("--dry-run", action="store_true", help="check everything, submit nothing")
    add("--emulator", action="store_true", help="use the built-in emulator (nothing is billed)")
    _add_base_url(run)
    add("-q", "--quiet", action="store_true", help="only warnings, errors and the summary")
    add(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr as text (a live display on a terminal; default) or one JSON object a line",
    )
    add(
        "--progress-interval",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="how often the plain log prints a progress line, if anything changed (default 2)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the whole command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Run many RunComfy image-to-video jobs at once, safely. Needs a token "
            "(RUNCOMFY_API_TOKEN) except for the demo and --emulator."
        ),
        epilog=f"Run a subcommand with --help for its options. Bare '{PROG}' runs a demo "
        f"batch on the built-in emulator ({1 / TIME_SCALE:.0f} times faster than the "
        f"service, {SLOTS} jobs at once; nothing is billed).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(commands)
    for name, text in (
        ("status", "print each job's state as JSON (queued, running, succeeded, failed, ...)"),
        ("result", "print each job's result (or its current state) as JSON"),
        ("cancel", "cancel queued jobs (not billed); a running one runs on and is billed"),
        ("wait", "re-attach jobs by request id and print each outcome as it comes"),
    ):
        single = commands.add_parser(name, help=text, description=text)
        single.add_argument("request_ids", nargs="+", metavar="REQUEST_ID")
        _add_base_url(single)
    jobs = commands.add_parser(
        "jobs",
        help="list a journal's jobs: key, request id, state, billed, cost (read-only)",
        description="List the jobs of a journal written by 'run' (read-only: it works while "
        "a run writes the journal), then a count by state. Exit 0, or 2 if there is no "
        "journal to read.",
    )
    jobs.add_argument(
        "journal",
        nargs="?",
        metavar="JOURNAL",
        help="the journal file (default: the one *.journal file in this folder)",
    )
    jobs.add_argument(
        "--json", action="store_true", help="one JSON object a job on stdout; the count on stderr"
    )
    commands.add_parser(
        "emulator",
        help=f"serve the emulator for your own tests (options: {PROG} emulator --help)",
        add_help=False,
    )
    return parser
