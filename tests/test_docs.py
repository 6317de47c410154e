"""The examples in README.md, docs/*.md and examples/ run, against the emulator.

Which blocks run: a fenced ```python block runs when it is a complete
program, that is, when one of its lines starts (in column 0) with
``asyncio.run(`` or ``anyio.run(``. Fragments (no such line) are shown, not
run. Each runnable block and each ``examples/*.py`` runs in its own Python
process, with ``RUNCOMFY_API_TOKEN`` and ``RUNCOMFY_MODEL_API_BASE_URL``
pointing at an emulator served by this test process on loopback, so nothing
ever reaches the internet. The processes run side by side, to keep it fast.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import pytest

import runcomfy_async
from runcomfy_async.testing import FakeRunComfy

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A server example runs until stopped, so it cannot run here; each has its own
# test (examples/web_app.py: tests/test_web_example.py).
SERVERS = {"web_app.py"}
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name not in SERVERS)
TOKEN_VARS = ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_API_KEY")
TIMEOUT = 60

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_RUNNABLE = re.compile(r"^(asyncio|anyio)\.run\(", re.MULTILINE)


def code_blocks(path: Path) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, info string, code) for each top-level fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence, start, body = opening["fence"], index, []
        while index < len(lines) and not (
            lines[index].startswith(fence[0] * len(fence)) and not lines[index].strip(fence[0])
        ):
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        yield start, opening["info"], "\n".join(body) + "\n"


def runnable_blocks() -> list[tuple[str, str]]:
    """Return (id, code) of every runnable python block of the docs."""
    found = []
    for path in DOCS:
        for line, info, code in code_blocks(path):
            if info in {"python", "py"} and _RUNNABLE.search(code):
                found.append((f"{path.relative_to(ROOT).as_posix()}:{line}", code))
    return found


BLOCKS = runnable_blocks()
PROGRAMS = dict(BLOCKS) | {
    path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in EXAMPLES
}


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """An emulator on loopback, served by a thread of this process."""
    with anyio.from_thread.start_blocking_portal() as portal:
        fake = portal.call(lambda: FakeRunComfy(time_scale=0.001))
        with portal.wrap_async_context_manager(fake):
            yield fake.base_url


@pytest.fixture(scope="module")
def processes(emulator_url, tmp_path_factory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Start every program at once, each in its own folder; stop any left at the end."""
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARS}
    env["RUNCOMFY_API_TOKEN"] = "test-token"
    env["RUNCOMFY_MODEL_API_BASE_URL"] = emulator_url
    started: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, code in PROGRAMS.items():
            folder = tmp_path_factory.mktemp("example")
            # Examples may read the repository's example files by relative path.
            shutil.copytree(ROOT / "examples", folder / "examples")
            script = folder / "example.py"
            script.write_text(code, encoding="utf-8")
            started[name] = subprocess.Popen(  # noqa: S603 - our interpreter, our examples
                [sys.executable, str(script)],
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        yield started
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
            process.communicate()


def test_there_are_examples():
    """The convention finds the README's and the tutorial's examples, and examples/."""
    names = {name.partition(":")[0] for name in PROGRAMS}
    assert {"README.md", "docs/tutorial.md", "examples/first_job.py", "examples/batch.py"} <= names


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_example_runs(processes, name):
    """The program exits 0 and writes nothing to stderr."""
    process = processes[name]
    out, err = process.communicate(timeout=TIMEOUT)
    assert (0, "") == (process.returncode, err), f"{name} failed:\n{out}\n{err}"


def test_api_reference_lists_every_public_name():
    """docs/api.md documents every name in runcomfy_async.__all__."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. (?:auto\w+|py:\w+):: (\w+)", text, re.MULTILINE))
    missing = sorted(set(runcomfy_async.__all__) - documented)
    assert [] == missing, f"add these to docs/api.md: {missing}"
