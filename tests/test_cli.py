"""The runcomfy-async command, run in-process (and once as a subprocess) against the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import anyio.to_thread
import pytest

from runcomfy_async import ImageToVideo, RunComfy
from runcomfy_async._cli import main
from runcomfy_async.testing import FakeRunComfy, ManualClock, sample_image_data_uri, sample_png

TOKEN_VARS = ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_API_KEY")
KEYS = {
    "index",
    "request_id",
    "status",
    "video_url",
    "urls",
    "cost",
    "error",
    "file",
    "download_error",
}


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    """Every test starts with no token and no base URL in the environment."""
    for name in (*TOKEN_VARS, "RUNCOMFY_MODEL_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_env(monkeypatch):
    """Point the command at a given emulator, as a user would with a real token."""

    def point_at(fake: FakeRunComfy) -> None:
        monkeypatch.setenv("RUNCOMFY_API_TOKEN", fake.config.token)
        monkeypatch.setenv("RUNCOMFY_MODEL_API_BASE_URL", fake.base_url)

    return point_at


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def run_main(*argv: str) -> int:
    # main() runs its own event loop, so it goes to a worker thread while the
    # test's loop serves the emulator.
    return await anyio.to_thread.run_sync(main, list(argv))


def test_demo_without_token(capsys):
    """With no token and no arguments, a demo batch runs against the built-in emulator."""
    code = main([])
    out, err = capsys.readouterr()
    results = lines(out)
    assert 0 == code
    assert "no jobs given" in err
    assert "nothing is billed" in err
    assert 8 == len(results)
    assert list(range(8)) == sorted(r["index"] for r in results)
    assert {"succeeded"} == {r["status"] for r in results}
    assert all(set(r) == KEYS for r in results)
    assert all(r["video_url"].endswith(".mp4") for r in results)
    # Every accepted request id is on stderr, before its result.
    for r in results:
        assert f"accepted  #{r['index']}  {r['request_id']}" in err


def test_no_token_falls_back_to_emulator(capsys):
    """A run with input but no token says plainly that the emulator is used."""
    code = main(["run", "--prompt", "a cat on a sofa", "--count", "2", "--frames", "241"])
    out, err = capsys.readouterr()
    assert 0 == code
    assert (
        "no RunComfy token found: running against the built-in emulator; nothing is billed" in err
    )
    assert ["succeeded", "succeeded"] == [r["status"] for r in lines(out)]


def test_batch_with_local_png_and_output_file(tmp_path, capsys):
    """A JSON-lines batch with a local PNG and a URL writes one result line per job."""
    (tmp_path / "cat.png").write_bytes(sample_png(640, 480))
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "the cat blinks", "image": "cat.png", "seed": 7}),
                "",
                json.dumps({"prompt": "the cat yawns", "image": str(tmp_path / "cat.png")}),
                json.dumps({"prompt": "a wave", "frames": 241}),
            ]
        )
        + "\n"
    )
    output = tmp_path / "out" / "results.jsonl"
    output.parent.mkdir()
    code = main(["run", "--batch", str(batch), "--emulator", "--output", str(output)])
    out, err = capsys.readouterr()
    results = sorted(lines(output.read_text()), key=lambda r: r["index"])
    assert 0 == code
    assert "" == out
    assert [0, 1, 2] == [r["index"] for r in results]
    assert all(r["status"] == "succeeded" and r["error"] is None for r in results)
    assert all(r["cost"] is not None and r["urls"] == [r["video_url"]] for r in results)
    assert "3 succeeded" in err


def test_download_saves_each_video_as_it_finishes(tmp_path, capsys):
    """--download DIR streams each succeeded job's video into DIR."""
    folder = tmp_path / "videos"
    code = main(
        ["run", "--emulator", "--count", "3", "--prompt", "a cat", "--download", str(folder)]
    )
    out, err = capsys.readouterr()
    results = lines(out)
    assert 0 == code
    files = sorted(folder.iterdir())
    assert 3 == len(files)
    assert sorted(str(f) for f in files) == sorted(r["file"] for r in results)
    assert all(f.read_bytes()[4:8] == b"ftyp" for f in files)
    assert all(r["download_error"] is None for r in results)
    assert 3 == err.count("saved     #")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "ok", "image": "https://example.com/a.png", "frames": 100}', "frames"),
        ('{"image": "https://example.com/a.png"}', "prompt: is required"),
        ('{"prompt": "ok", "image": "missing.png"}', "no such file"),
        ('{"prompt": "ok", "image": "https://example.com/a.gif"}', "JPEG or PNG"),
        ('{"prompt": "ok", "colour": "red"}', "unknown key"),
        ("[1, 2]", "not a JSON object"),
        ("{not json", "not a JSON object"),
    ],
    ids=["frames", "no-prompt", "missing-file", "gif", "unknown-key", "array", "not-json"],
)
async def test_bad_line_stops_before_any_submit(tmp_path, capsys, fake_env, line, message):
    """A bad line is reported with its line number, and nothing is submitted."""
    batch = tmp_path / "batch.jsonl"
    good = json.dumps({"prompt": "fine", "image": "https://example.com/a.png"})
    batch.write_text(f"{good}\n{line}\n{good}\n")
    output = tmp_path / "results.jsonl"
    async with FakeRunComfy(time_scale=0.001) as fake:
        fake_env(fake)
        code = await run_main("run", "--batch", str(batch), "--output", str(output))
        _, err = capsys.readouterr()
        assert 2 == code
        assert f"{batch}:2: " in err
        assert message in err
        assert "nothing was submitted" in err
        assert 0 == fake.count("submit")
        assert not output.exists()


async def test_every_bad_line_is_reported(tmp_path, capsys, fake_env):
    """All bad lines are listed at once, each with its number."""
    batch = tmp_path / "batch.jsonl"
    image = "https://example.com/a.png"
    batch.write_text(
        json.dumps({"prompt": "", "image": image})
        + "\n"
        + json.dumps({"prompt": "x", "image": image, "seed": -5})
        + "\n"
    )
    async with FakeRunComfy(time_scale=0.001) as fake:
        fake_env(fake)
        code = await run_main("run", "--batch", str(batch))
        assert 0 == fake.count("submit")
    _, err = capsys.readouterr()
    assert 2 == code
    assert f"{batch}:1: prompt: must not be empty" in err
    assert f"{batch}:2: seed" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--batch", "x.jsonl", "--prompt", "p"],
        ["run", "--emulator", "--base-url", "http://127.0.0.1:9"],
        ["run", "--count", "0"],
        ["run", "--frames", "100"],
        ["run", "--timeout", "-1", "--emulator"],
        ["run", "--batch", "does-not-exist.jsonl"],
        ["frobnicate"],
    ],
    ids=[
        "batch-and-prompt",
        "emulator-and-base-url",
        "count-0",
        "frames",
        "timeout",
        "no-file",
        "cmd",
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    """Bad options exit 2 with a message."""
    assert 2 == main(argv)
    assert "error" in capsys.readouterr().err


def test_real_mode_needs_prompt_and_image(monkeypatch, capsys):
    """With a token, nothing is filled in: prompt and image are required, before any call."""
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "a-token")
    # An unroutable base URL: any attempt to send would fail loudly, not bill.
    monkeypatch.setenv("RUNCOMFY_MODEL_API_BASE_URL", "http://127.0.0.1:9")
    assert 2 == main(["run", "--prompt", "a cat"])
    assert "image: is required" in capsys.readouterr().err
    assert 2 == main(["run", "--image", "https://example.com/a.png"])
    assert "prompt: is required" in capsys.readouterr().err


async def test_failed_jobs_exit_1(capsys, fake_env):
    """A run against a given emulator where every job fails exits 1, one error each."""
    async with FakeRunComfy(time_scale=0.001, failure_rate=1.0) as fake:
        fake_env(fake)
        image = sample_image_data_uri(640, 480)
        code = await run_main("run", "--prompt", "p", "--image", image, "--count", "3")
        assert 3 == fake.count("submit")
    out, _ = capsys.readouterr()
    results = lines(out)
    assert 1 == code
    assert ["failed"] * 3 == [r["status"] for r in results]
    assert all(r["error"].startswith("JobFailedError") for r in results)


def test_batch_deadline_times_out(capsys):
    """--timeout is a deadline for the batch: late jobs end as timed_out."""
    code = main(["run", "--emulator", "--count", "2", "--timeout", "0.2"])
    out, err = capsys.readouterr()
    assert 1 == code
    assert {"timed_out"} == {r["status"] for r in lines(out)}
    assert "2 timed_out" in err


async def test_status_result_cancel(capsys, fake_env):
    """The single calls print the server's answer as JSON."""
    clock = ManualClock()
    async with FakeRunComfy(clock=clock, slots=1) as fake:
        fake_env(fake)
        request = ImageToVideo(prompt="p", image_url=sample_image_data_uri(640, 480))
        async with RunComfy(token=fake.config.token, base_url=fake.base_url) as client:
            running = await client.api.submit(request)
            queued = await client.api.submit(request)

        assert 0 == await run_main("status", queued.request_id, "--base-url", fake.base_url)
        status = json.loads(capsys.readouterr().out)
        assert {"request_id": queued.request_id, "status": "queued", "queue_position": 0} == status

        assert 0 == await run_main("cancel", queued.request_id)
        assert json.loads(capsys.readouterr().out)["cancelled"] is True

        clock.advance(10_000)  # the running job finishes
        assert 0 == await run_main("result", running.request_id)
        result = json.loads(capsys.readouterr().out)
        assert "succeeded" == result["status"]
        assert result["video_url"].endswith(f"{running.request_id}.mp4")

        assert 1 == await run_main("result", "no-such-id")
        assert "NotFoundError" in capsys.readouterr().err


def test_single_call_needs_token(capsys):
    """Status, result and cancel never fall back to the emulator."""
    assert 2 == main(["status", "abc"])
    assert "no RunComfy token" in capsys.readouterr().err


def test_version_and_help(capsys):
    """--version and --help exit 0."""
    assert 0 == main(["--version"])
    assert "runcomfy-async" in capsys.readouterr().out
    assert 0 == main(["run", "--help"])
    assert "--batch" in capsys.readouterr().out
    assert 0 == main(["emulator", "--help"])
    assert "--time-scale" in capsys.readouterr().out


def test_python_m_subprocess(tmp_path):
    """``python -m runcomfy_async run --count 2 --emulator`` works as a real process."""
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARS}
    done = subprocess.run(
        [sys.executable, "-m", "runcomfy_async", "run", "--count", "2", "--emulator"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert ["succeeded", "succeeded"] == [r["status"] for r in lines(done.stdout)]
    assert "nothing is billed" in done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_ctrl_c_cancels_queued_jobs_and_reports_all(tmp_path):
    """Ctrl-C stops the batch: queued jobs are cancelled remotely and every job gets a line."""
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARS}
    argv = [sys.executable, "-m", "runcomfy_async", "run", "--count", "12", "--emulator"]
    with subprocess.Popen(  # noqa: S603 - our own interpreter and module
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    ) as child:
        assert child.stderr is not None
        for line in child.stderr:  # wait until the server has accepted a job
            if line.startswith("accepted"):
                break
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    results = lines(out)
    assert 130 == child.returncode, err
    assert "interrupted: cancelling queued jobs" in err
    assert list(range(12)) == sorted(r["index"] for r in results)
    assert "cancelled" in {r["status"] for r in results}
