"""The emulator from the command line: ``runcomfy-async emulator``, and the built-in one.

``run`` starts the built-in emulator in its own process for the demo and for
``--emulator``; ``runcomfy-async emulator`` serves one until Ctrl-C, for a
user's own tests. The emulator's options are its own
(``runcomfy_async.testing``); here they get this command's name and their
defaults in the help.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

import attrs

from ._base import EXIT_USAGE, PROG

TIME_SCALE: Final = 0.01
"""The built-in emulator runs 100 times faster than the real service."""
SLOTS: Final = 4
"""Jobs the built-in emulator runs at once."""
SAMPLE_IMAGE_PATH: Final = "/_emulator/images/1280x720.png"


@attrs.frozen
class Emulated:
    """Where the built-in emulator listens, and what to send it."""

    token: str
    base_url: str
    sample_image: str


@asynccontextmanager
async def builtin_emulator() -> AsyncIterator[Emulated]:
    """Serve the emulator on loopback for one run; a real token is never sent to it."""
    from runcomfy_async.testing import FakeRunComfy  # noqa: PLC0415 - loaded only when used

    async with FakeRunComfy(time_scale=TIME_SCALE, slots=SLOTS, record=False) as fake:
        yield Emulated(
            token=fake.config.token,
            base_url=fake.base_url,
            sample_image=fake.base_url + SAMPLE_IMAGE_PATH,
        )


def _parser() -> argparse.ArgumentParser:
    from runcomfy_async.testing import __main__ as emulator  # noqa: PLC0415

    # A public build_parser(prog=...) in the emulator would spare this
    # borrowing of a private function (proposed to its owner).
    parser = emulator._parser()
    parser.prog = f"{PROG} emulator"
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.description = (
        "Serve the RunComfy Model API emulator on loopback until Ctrl-C. Point a client "
        "at it with RUNCOMFY_MODEL_API_BASE_URL=http://HOST:PORT and "
        "RUNCOMFY_API_TOKEN=<its --token>. Nothing is billed."
    )
    return parser


def cmd_emulator(argv: Sequence[str]) -> int:
    """Run ``runcomfy-async emulator``; return the exit code."""
    try:
        # Parsed here first, so that help and usage errors name this command.
        _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    from runcomfy_async.testing.__main__ import main  # noqa: PLC0415

    return main(list(argv))
