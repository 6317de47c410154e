"""The runcomfy-async command as a real process: python -m, and Ctrl-C once and twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import anyio.to_thread
import pytest

from runcomfy_async.testing import FakeRunComfy, Fixed, sample_image_data_uri

TOKEN_VARS = ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_API_KEY")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARS}
    env.pop("RUNCOMFY_MODEL_API_BASE_URL", None)
    return {**env, **extra}


def test_python_m_subprocess(tmp_path):
    """``python -m runcomfy_async run --count 2 --emulator`` works as a real process."""
    done = subprocess.run(
        [sys.executable, "-m", "runcomfy_async", "run", "--count", "2", "--emulator"],
        capture_output=True,
        text=True,
        timeout=50,
        env=clean_env(),
        cwd=tmp_path,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert ["succeeded", "succeeded"] == [r["status"] for r in lines(done.stdout)]
    assert "nothing is billed" in done.stderr


class Child:
    """The command in a subprocess against a test's emulator, its stderr read as it comes."""

    def __init__(self, fake: FakeRunComfy, tmp_path, count: int) -> None:
        image = tmp_path / "image.txt"
        image.write_text(sample_image_data_uri(640, 480))
        argv = [
            sys.executable,
            "-m",
            "runcomfy_async",
            "run",
            "--prompt",
            "p",
            "--image",
            image.read_text(),
            "--count",
            str(count),
        ]
        env = clean_env(
            RUNCOMFY_API_TOKEN=fake.config.token, RUNCOMFY_MODEL_API_BASE_URL=fake.base_url
        )
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        self.err: list[str] = []
        self.seen = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.seen:
                self.err.append(line)
                self.seen.notify_all()
        with self.seen:
            self.err.append("")  # end of stream
            self.seen.notify_all()

    def _wait_for(self, predicate) -> None:
        with self.seen:
            assert self.seen.wait_for(lambda: predicate(self.err), timeout=40), "".join(self.err)

    async def until(self, predicate) -> None:
        # Waited for in a thread: the emulator serves on this test's loop.
        await anyio.to_thread.run_sync(self._wait_for, predicate)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A failed assertion must not leave the child running.
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=40)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def finish(self) -> tuple[int, list[dict], str]:
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        code = self.process.wait(timeout=40)
        self.reader.join(timeout=40)
        return code, lines(out), "".join(self.err)


def accepted_ids(err: str) -> set[str]:
    return {line.split()[-1] for line in err.splitlines() if line.startswith("accepted")}


@posix_only
async def test_ctrl_c_cancels_queued_and_follows_running_jobs(tmp_path):
    """One Ctrl-C: queued jobs cancelled (not billed), running ones followed (#8 item 1)."""
    # Two slots; each job runs 2 s, so at Ctrl-C two run and six wait.
    async with FakeRunComfy(time_scale=0.01, slots=2, run_time=Fixed(200)) as fake:
        with Child(fake, tmp_path, 8) as child:
            await child.until(lambda err: sum(line.startswith("running") for line in err) >= 1)
            child.process.send_signal(signal.SIGINT)
            code, results, err = await anyio.to_thread.run_sync(child.finish)
        truth = {rid: fake.jobs[rid].cancelled for rid in fake.jobs}
    assert 130 == code, err
    assert "interrupted" in err
    assert 8 == len(results)
    statuses = {r["status"] for r in results}
    assert "succeeded" in statuses, err  # the running jobs were seen through
    for r in results:
        if r["status"] == "succeeded":
            assert r["billed"] is True
        else:
            assert "cancelled" == r["status"], r
            assert r["billed"] is False
            assert r["request_id"] is None or truth[r["request_id"]]
    cost = sum(r["cost"] for r in results if r["billed"])
    assert f"cost ${cost:.2f}" in err


@posix_only
async def test_second_ctrl_c_names_every_unsettled_request_id(tmp_path):
    """Two Ctrl-C: quit now, but every accepted request id not settled is named (#8 item 2)."""
    # Jobs run for a long time: nothing settles on its own during the test.
    async with FakeRunComfy(time_scale=1.0, slots=2, run_time=Fixed(600)) as fake:
        with Child(fake, tmp_path, 6) as child:
            await child.until(lambda err: sum(line.startswith("accepted") for line in err) >= 6)
            # Twice, 50 ms apart, as in the report.
            child.process.send_signal(signal.SIGINT)
            await anyio.sleep(0.05)
            child.process.send_signal(signal.SIGINT)
            code, results, err = await anyio.to_thread.run_sync(child.finish)
    assert 130 == code, err
    assert "quitting" in err
    named = err[err.index("quitting") :].split("runcomfy-async: 6 jobs")[0]
    by_id = {r["request_id"]: r for r in results}
    for rid in accepted_ids(err):
        # Settled before the second Ctrl-C (cancelled while queued), or named.
        assert rid in named or by_id[rid]["status"] == "cancelled", rid
    assert 6 == len(results)
    running = [r for r in results if r["status"] == "running"]
    assert running, err
    assert all(r["billed"] is True and r["request_id"] for r in running)
    assert "runcomfy-async wait" in err
