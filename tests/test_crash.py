"""Batches killed with SIGKILL at random moments, and run again: nothing paid twice, nothing lost.

Issue #7's acceptance tests. The emulator runs in another process and holds
back every accepted submit's answer (``--submit-delay``), so a kill often
lands between a POST and its answer: the job exists and is billed, the
client never heard of it. The batch is killed at least five times, then run
to its end with the same command, then run once more. What must hold:

- the emulator accepted each job's submit at most once (no job paid twice),
  and a further run of the finished batch submits nothing;
- every job ends with a result or its own error (an uncertain one says so,
  and is not re-sent);
- (CLI) the results file has exactly one line per input line.

The same is done from Python with ``RunComfy(journal=...)`` and ``resume()``.
Both drive real processes, so they wait on real time, but only for the
emulator's counters or the child's own progress, never for a fixed guess.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runcomfy_async.testing import EmulatorProcess, sample_png

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "crash-token"
JOBS = 200
KILLS = 5
TIME_SCALE = 0.01
"""A nominal minute lasts 0.6 s: each job runs 0.05 to 0.2 s."""
SUBMIT_DELAY = 30.0
"""Nominal seconds an accepted submit's answer is held: 0.3 s, the window a kill aims at."""
RUN_TIME = "uniform:5,20"
FAILURE_RATE = 0.05
"""Some jobs fail on the server: they must end with their own error."""
WAIT = 30.0
"""Seconds any one wait on a child may take before the test gives up."""


@pytest.fixture
def emulator() -> Iterator[EmulatorProcess]:
    """The emulator in its own process, holding back accepted submits' answers."""
    with EmulatorProcess(
        token=TOKEN,
        time_scale=TIME_SCALE,
        seed=3,
        failure_rate=FAILURE_RATE,
        record=False,
        extra_args=["--submit-delay", repr(SUBMIT_DELAY), "--run-time", RUN_TIME],
    ) as process:
        yield process


def child_env(emulator: EmulatorProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    env |= {
        "RUNCOMFY_API_TOKEN": TOKEN,
        "RUNCOMFY_MODEL_API_BASE_URL": emulator.base_url,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    return env


def accepted_total(emulator: EmulatorProcess) -> int:
    return sum(emulator.accepted_submits().values())


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll *condition* (every 20 ms) until it holds; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def journal_states(path: Path) -> dict[str, int]:
    """Count a journal's jobs by state, reading it as any SQLite reader would."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True)
    try:
        return dict(connection.execute("SELECT state, count(*) FROM jobs GROUP BY state"))
    finally:
        connection.close()


def sqlite_files(folder: Path) -> list[Path]:
    return [
        p for p in folder.iterdir() if p.is_file() and p.read_bytes()[:16] == b"SQLite format 3\x00"
    ]


def kill_repeatedly(
    start: Callable[[], subprocess.Popen[str]],
    emulator: EmulatorProcess,
    rng: random.Random,
    journal: Callable[[], Path | None],
) -> list[dict[str, object]]:
    """Start the batch and SIGKILL it KILLS times at random moments; return what each kill hit.

    The first kill comes as soon as the emulator accepted a submit of that
    run, inside the window where its answer is held: a kill between a POST
    and its answer for certain. While some jobs were never sent, a later
    kill comes at a random moment after the run's first new accepted submit,
    sooner the fewer jobs are left (so that the run cannot have finished);
    once every job was sent, at a random moment after start. A run that
    ends on its own before its kill is no kill (it is counted, and the next
    run is started).
    """
    kills: list[dict[str, object]] = []
    runs = 0
    while len(kills) < KILLS:
        runs += 1
        assert runs <= 3 * KILLS, f"could not kill the batch mid-run {KILLS} times: {kills}"
        path = journal()
        known = 0 if path is None else sum(journal_states(path).values())
        before = accepted_total(emulator)
        child = start()
        try:
            if known < JOBS:
                wait_for(
                    lambda before=before, child=child: (
                        accepted_total(emulator) > before or child.poll() is not None
                    ),
                    f"run {runs} to submit something",
                )
                delay = rng.uniform(0.0, 1.2) * (JOBS - known) / JOBS if kills else 0.0
            else:
                delay = rng.uniform(0.0, 0.6)
            time.sleep(delay)
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.communicate()
        if child.returncode != -signal.SIGKILL:
            continue  # it ended on its own first
        path = journal()
        kills.append(
            {
                "accepted_before": before,
                "accepted_after": accepted_total(emulator),
                "journal": {} if path is None else journal_states(path),
            }
        )
    return kills


def assert_paid_once(counts: dict[str, int]) -> None:
    twice = {key: n for key, n in counts.items() if n > 1}
    assert {} == twice, f"{len(twice)} jobs were submitted more than once"


# -- the CLI --------------------------------------------------------------------------------


def write_batch(folder: Path) -> Path:
    """A batch of JOBS lines, each its own job (its own seed), one local image for all."""
    (folder / "start.png").write_bytes(sample_png(640, 480))
    batch = folder / "batch.jsonl"
    with batch.open("w", encoding="utf-8") as out:
        for number in range(JOBS):
            line = {"prompt": f"crash test job {number}", "image": "start.png", "seed": number}
            out.write(json.dumps(line) + "\n")
    return batch


def test_cli_batch_survives_kill_9(emulator, tmp_path):
    """`runcomfy-async run` killed five times and re-run: one submit per job, one line per job."""
    batch = write_batch(tmp_path)
    output = tmp_path / "out" / "results.jsonl"
    output.parent.mkdir()
    command = [sys.executable, "-m", "runcomfy_async", "run", "--batch", str(batch)]
    command += ["--output", str(output)]
    env = child_env(emulator)

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(  # noqa: S603 - our interpreter, our CLI
            command,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def journal() -> Path | None:
        # The journal's name is the CLI's business; it is the SQLite file kept
        # beside the output (the default place).
        found = sqlite_files(output.parent)
        return found[0] if found else None

    kills = kill_repeatedly(start, emulator, random.Random(7), journal)
    assert journal() is not None, (
        f"no journal beside {output}: {sorted(p.name for p in output.parent.iterdir())}"
    )
    # At least the first kill hit a submit whose answer had not come back.
    assert kills[0]["journal"].get("intent", 0) >= 1, kills

    final = start()
    out, err = final.communicate(timeout=WAIT * 2)
    counts = emulator.accepted_submits()
    again = start()
    out_again, err_again = again.communicate(timeout=WAIT * 2)

    assert_paid_once(counts)
    assert counts == emulator.accepted_submits(), "re-running a finished batch submitted again"

    lines = [json.loads(text) for text in output.read_text(encoding="utf-8").splitlines()]
    assert JOBS == len(lines), f"{len(lines)} result lines for {JOBS} input lines"
    assert JOBS == len({line["key"] for line in lines})
    assert JOBS == len({line["index"] for line in lines})
    for line in lines:
        if line["status"] == "succeeded":
            assert line["video_url"], line
        else:
            assert line["error"], line  # its own error, in words
    followed = [line for line in lines if line["request_id"]]
    assert len(followed) == len({line["request_id"] for line in followed})
    uncertain = [line for line in lines if "uncertain" in json.dumps(line).lower()]
    # Every accepted submit is a line that was followed, or one reported uncertain.
    assert len(followed) <= len(counts) <= len(followed) + len(uncertain)
    if uncertain:
        said = out + err
        assert "uncertain" in said.lower(), said
        assert "--resubmit-uncertain" in said, said
    assert 0 == again.returncode or uncertain or any(x["status"] != "succeeded" for x in lines), (
        out_again + err_again
    )


# -- Python -----------------------------------------------------------------------------------

_SCRIPT = """
    import asyncio, json, sys
    from runcomfy_async import ImageToVideo, Limits, RunComfy
    from runcomfy_async.testing import sample_image_data_uri

    IMAGE = sample_image_data_uri(640, 480)
    JOBS = int(sys.argv[2])

    async def main():
        requests = [
            ImageToVideo(prompt=f"python crash job {n}", image_url=IMAGE, seed=n)
            for n in range(JOBS)
        ]
        lines = []
        async with RunComfy(journal=sys.argv[1]) as client:
            resumed = await client.resume()
            jobs = client.submit_many(requests)
            await client.gather([*resumed, *jobs])
            for job in jobs:
                error = job.exception()
                lines.append({
                    "key": job.key,
                    "request_id": job.request_id,
                    "ok": error is None and job.result().video_url is not None,
                    "error": None if error is None else f"{type(error).__name__}: {error}",
                })
        print(json.dumps(lines))

    asyncio.run(main())
"""


def test_python_batch_survives_kill_9(emulator, tmp_path):
    """`RunComfy(journal=...)` killed five times, resumed: one submit per job, every job ends."""
    script = tmp_path / "batch.py"
    script.write_text(textwrap.dedent(_SCRIPT), encoding="utf-8")
    journal = tmp_path / "batch.journal"
    env = child_env(emulator)

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(  # noqa: S603 - our interpreter, our script
            [sys.executable, str(script), str(journal), str(JOBS)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    kills = kill_repeatedly(
        start, emulator, random.Random(11), lambda: journal if journal.exists() else None
    )
    assert kills[0]["journal"].get("intent", 0) >= 1, kills

    final = start()
    out, err = final.communicate(timeout=WAIT * 2)
    assert 0 == final.returncode, err
    counts = emulator.accepted_submits()
    again = start()
    out_again, err_again = again.communicate(timeout=WAIT * 2)
    assert 0 == again.returncode, err_again

    assert_paid_once(counts)
    assert counts == emulator.accepted_submits(), "re-running a finished batch submitted again"
    jobs = json.loads(out.strip().splitlines()[-1])
    assert JOBS == len(jobs) == len({job["key"] for job in jobs})
    for job in jobs:
        assert job["ok"] or job["error"], job
    followed = [job for job in jobs if job["request_id"]]
    uncertain = [job for job in jobs if job["error"] and "Uncertain" in job["error"]]
    assert len(followed) <= len(counts) <= len(followed) + len(uncertain)
    # The second run over the finished batch tells the same story.
    assert [(j["key"], j["ok"]) for j in jobs] == [
        (j["key"], j["ok"]) for j in json.loads(out_again.strip().splitlines()[-1])
    ]
