"""The runcomfy-async command, run in-process against the emulator."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import anyio.to_thread
import pytest

from runcomfy_async import ImageToVideo, RetryPolicy, RunComfy
from runcomfy_async.cli import _report, _run, main
from runcomfy_async.cli._parser import build_parser
from runcomfy_async.cli._report import Reporter
from runcomfy_async.cli._results import STATUSES, Record
from runcomfy_async.testing import FakeRunComfy, Fixed, sample_image_data_uri, sample_png

TOKEN_VARS = ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_API_KEY")
KEYS = {
    "index",
    "key",
    "request_id",
    "status",
    "billed",
    "emulated",
    "video_url",
    "urls",
    "cost",
    "error",
    "file",
    "download_error",
}
IMAGE = "https://example.com/a.png"


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    """Every test starts with no token, no base URL, and a plain (non-terminal) log."""
    for name in (*TOKEN_VARS, "RUNCOMFY_MODEL_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_report, "stderr_is_terminal", lambda: False)


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
    """With no token and no arguments, a demo batch runs on the built-in emulator."""
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
    assert all(r["emulated"] is True and r["billed"] is True for r in results)
    assert all(r["video_url"].endswith(".mp4") for r in results)
    # Every accepted request id is on stderr, before its result.
    for r in results:
        assert f"accepted  #{r['index']}  {r['key']}  {r['request_id']}" in err
    assert "(emulated: nothing was billed)" in err


def test_own_jobs_without_token_are_a_usage_error(capsys):
    """Without a token, a user's own jobs do not silently run on the emulator (#8 item 7)."""
    code = main(["run", "--prompt", "a cat on a sofa", "--image", IMAGE, "--count", "2"])
    out, err = capsys.readouterr()
    assert 2 == code
    assert "" == out
    assert "no RunComfy token found" in err
    assert "--emulator" in err
    assert 1 == len(err.strip().splitlines())
    assert "Traceback" not in err


def test_emulator_flag_marks_every_result(capsys):
    """With --emulator, every result says it was emulated."""
    code = main(["run", "--emulator", "--prompt", "a cat", "--count", "2", "--frames", "241"])
    out, err = capsys.readouterr()
    assert 0 == code
    assert [True, True] == [r["emulated"] for r in lines(out)]
    assert "built-in emulator" in err


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
                json.dumps({"prompt": "a wave", "frames": 241, "key": "wave"}),
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
    assert ["line-1", "line-3", "wave"] == [r["key"] for r in results]
    assert all(r["status"] == "succeeded" and r["error"] is None for r in results)
    assert all(r["cost"] is not None and r["urls"] == [r["video_url"]] for r in results)
    assert "3 succeeded" in err
    assert f"results: {output}" in err


def test_csv_batch_with_keys_names_downloads(tmp_path, capsys):
    """A CSV batch (header row) works like JSON lines; a key names the video file."""
    batch = tmp_path / "jobs.csv"
    batch.write_text("key,prompt,seed,frames\ncat,a cat,7,\ndog,a dog,,241\n")
    folder = tmp_path / "videos"
    code = main(["run", "--batch", str(batch), "--emulator", "--download", str(folder)])
    out, err = capsys.readouterr()
    results = {r["key"]: r for r in lines(out)}
    assert 0 == code, err
    assert {"cat", "dog"} == set(results)
    assert {"cat.mp4", "dog.mp4"} == {p.name for p in folder.iterdir()}
    assert str(folder / "cat.mp4") == results["cat"]["file"]
    assert all((folder / n).read_bytes()[4:8] == b"ftyp" for n in ("cat.mp4", "dog.mp4"))
    assert 2 == err.count("saved     #")


def test_download_saves_each_video_as_it_finishes(tmp_path, capsys):
    """--download DIR streams each succeeded job's video into DIR."""
    folder = tmp_path / "videos"
    code = main(
        ["run", "--emulator", "--count", "3", "--prompt", "a cat", "--download", str(folder)]
    )
    out, _ = capsys.readouterr()
    results = lines(out)
    assert 0 == code
    files = sorted(folder.iterdir())
    assert 3 == len(files)
    assert sorted(str(f) for f in files) == sorted(r["file"] for r in results)
    assert all(r["download_error"] is None for r in results)


async def test_every_bad_line_is_reported_at_once(tmp_path, capsys, fake_env):
    """Syntax, key, shape and content errors all come in one report (#8 item 3)."""
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    whole = sample_png(640, 480)
    (tmp_path / "half.png").write_bytes(whole[: len(whole) // 2])  # truncated (#8 item 6)
    good = {"prompt": "fine", "image": IMAGE}
    bad = [
        "{not json",
        json.dumps({"prompt": "x", "image": IMAGE, "colour": "red"}),
        "[1, 2]",
        json.dumps({**good, "seed": -5}),
        json.dumps({**good, "frames": 100}),
        json.dumps({"prompt": "", "image": IMAGE}),
        json.dumps({"image": IMAGE}),
        json.dumps({"prompt": "x", "image": "missing.png"}),
        json.dumps({"prompt": "x", "image": "https://example.com/a.gif"}),
        json.dumps({"prompt": "x", "image": "bad.png"}),
        json.dumps({"prompt": "x", "image": "half.png"}),
        json.dumps({**good, "key": "a/b"}),
        json.dumps({**good, "key": "twice"}),
        json.dumps({**good, "key": "twice"}),
    ]
    text = [json.dumps(good)]
    for line in bad:
        text += [line, json.dumps(good)]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(text) + "\n")
    bad_numbers = [2 * n for n in range(1, len(bad) + 1)]
    bad_numbers.remove(26)  # the first "twice" is fine; the second is the duplicate
    async with FakeRunComfy(time_scale=0.001) as fake:
        fake_env(fake)
        code = await run_main("run", "--batch", str(batch))
        assert 0 == fake.count("submit")
    _, err = capsys.readouterr()
    assert 2 == code
    for number in bad_numbers:
        assert f"{batch}:{number}: " in err, number
    for message in (
        "not a JSON object",
        "unknown key(s) 'colour'",
        "seed",
        "frames",
        "prompt: must not be empty",
        "prompt: is required",
        "no such file",
        "JPEG or PNG",
        "key: 'a/b'",
        "is also the key of",
        f"image {tmp_path / 'half.png'}: the image is damaged or incomplete",
    ):
        assert message in err, message
    assert f"{len(bad_numbers)} errors: nothing was submitted" in err


def test_one_line_with_several_bad_fields_reports_each(tmp_path, capsys):
    """Every bad field of a line is named, not only the first."""
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"prompt": "", "image": IMAGE, "seed": "x", "frames": 5}) + "\n")
    assert 2 == main(["run", "--batch", str(batch), "--emulator"])
    err = capsys.readouterr().err
    assert 3 == err.count(f"{batch}:1: ")
    assert "1 error" not in err
    assert "3 errors: nothing was submitted" in err


def test_missing_output_folder_is_a_usage_error(tmp_path, capsys):
    """A missing --output folder is exit 2 with one clear line, not a traceback (#8 item 5)."""
    output = tmp_path / "nowhere" / "results.jsonl"
    code = main(["run", "--emulator", "--count", "1", "--output", str(output)])
    err = capsys.readouterr().err
    assert 2 == code
    assert "Traceback" not in err
    assert f"--output: the folder {output.parent} does not exist" in err
    assert 1 == len(err.strip().splitlines())


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--batch", "x.jsonl", "--prompt", "p"],
        ["run", "--emulator", "--base-url", "http://127.0.0.1:9"],
        ["run", "--count", "0"],
        ["run", "--frames", "100"],
        ["run", "--timeout", "-1", "--emulator"],
        ["run", "--batch", "does-not-exist.jsonl", "--emulator"],
        ["run", "--emulator", "--output", "."],
        ["frobnicate"],
    ],
    ids=[
        "batch-and-prompt",
        "emulator-and-base-url",
        "count-0",
        "frames",
        "timeout",
        "no-file",
        "output-is-folder",
        "cmd",
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    """Bad options exit 2 with a message and no traceback."""
    assert 2 == main(argv)
    err = capsys.readouterr().err
    assert "error" in err
    assert "Traceback" not in err


def test_real_mode_needs_prompt_and_image(monkeypatch, capsys):
    """With a token, nothing is filled in: prompt and image are required, before any call."""
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "a-token")
    # An unroutable base URL: any attempt to send would fail loudly, not bill.
    monkeypatch.setenv("RUNCOMFY_MODEL_API_BASE_URL", "http://127.0.0.1:9")
    assert 2 == main(["run", "--prompt", "a cat"])
    assert "image: is required" in capsys.readouterr().err
    assert 2 == main(["run", "--image", IMAGE])
    assert "prompt: is required" in capsys.readouterr().err


def test_dry_run_submits_nothing(monkeypatch, capsys):
    """--dry-run checks everything, says how many jobs would run, and sends nothing."""
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "a-token")
    monkeypatch.setenv("RUNCOMFY_MODEL_API_BASE_URL", "http://127.0.0.1:9")
    code = main(["run", "--prompt", "a cat", "--image", IMAGE, "--count", "3", "--dry-run"])
    out, err = capsys.readouterr()
    assert 0 == code
    assert "" == out
    assert "3 jobs would be submitted" in err
    assert "no cost is estimated" in err


async def test_failed_jobs_exit_1(capsys, fake_env):
    """Every job fails: exit 1, one error each, billed (the model ran)."""
    async with FakeRunComfy(time_scale=0.001, failure_rate=1.0) as fake:
        fake_env(fake)
        image = sample_image_data_uri(640, 480)
        code = await run_main("run", "--prompt", "p", "--image", image, "--count", "3")
        assert 3 == fake.count("submit")
    out, err = capsys.readouterr()
    results = lines(out)
    assert 1 == code
    assert ["failed"] * 3 == [r["status"] for r in results]
    assert [True] * 3 == [r["billed"] for r in results]
    assert [False] * 3 == [r["emulated"] for r in results]
    assert all(r["error"].startswith("JobFailedError") for r in results)
    # The id has its own field; the error text does not repeat it (#8 item 8).
    assert all(r["request_id"] not in r["error"] for r in results)
    assert "3 failed" in err


async def test_deadline_follows_billed_jobs_to_their_end(capsys, fake_env):
    """At --timeout, queued jobs are cancelled (not billed), running ones followed (#8 item 1)."""
    # Two slots: two jobs run (for 1.5 s), four wait in the queue past the deadline.
    async with FakeRunComfy(time_scale=0.01, slots=2, run_time=Fixed(150)) as fake:
        fake_env(fake)
        image = sample_image_data_uri(640, 480)
        code = await run_main(
            "run", "--prompt", "p", "--image", image, "--count", "6", "--timeout", "0.5"
        )
        truth = {rid: fake.jobs[rid] for rid in fake.jobs}
    out, err = capsys.readouterr()
    results = lines(out)
    assert 1 == code
    assert 6 == len(results)
    ran = [r for r in results if r["status"] == "succeeded"]
    assert ran, err  # the two running at the deadline were followed, not written off
    for r in results:
        job = truth.get(r["request_id"])
        if r["status"] == "succeeded":
            assert r["billed"] is True
            assert r["cost"] is not None
        else:
            assert "timed_out" == r["status"]
            assert r["billed"] is False, r
            assert job is None or job.cancelled, r
    cost = sum(r["cost"] for r in ran)
    assert f"cost ${cost:.2f}" in err
    assert "followed to their end" in err


async def test_unreachable_api_fails_fast_and_says_so_once(capsys, monkeypatch):
    """A closed port: said once, nothing more sent, every job not billed (#8 item 4)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now. Short retries keep the test fast.
    monkeypatch.setattr(_run, "CLIENT_RETRY", RetryPolicy(attempts=2, initial=0.01, maximum=0.01))
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "a-token")
    monkeypatch.setenv("RUNCOMFY_MODEL_API_BASE_URL", f"http://127.0.0.1:{port}")
    code = await run_main("run", "--prompt", "p", "--image", IMAGE, "--count", "10")
    out, err = capsys.readouterr()
    results = lines(out)
    assert 1 == code
    assert 10 == len(results)
    assert {"error"} == {r["status"] for r in results}
    assert {False} == {r["billed"] for r in results}
    assert all(r["error"].startswith(("APIUnreachableError", "ConnectError")) for r in results)
    assert 1 == err.count("cannot be reached: stopping")
    assert "10 errors in" in err
    assert "Traceback" not in err


def test_progress_counts_cancelled_apart_from_failed(capsys):
    """A cancelled job is counted as cancelled, not failed, and no progress line repeats."""
    reporter = Reporter("text")
    reporter.start(2, lambda: 1)
    record = Record(
        index=0, key="a", request_id="r", status="cancelled", billed=False, emulated=False
    )
    reporter.finished(record)
    reporter.progress()
    reporter.progress()
    err = capsys.readouterr().err
    assert "1 cancelled" in err
    assert "failed" not in err
    assert "1 request;" in err
    assert 1 == err.count("progress  ")


def test_summary_plurals():
    """Counts agree with their nouns: 1 job, 1 request, 3 errors."""
    summary = _report.Summary(
        statuses={"succeeded": 1},
        billed={"yes": 1},
        cost=0.5,
        emulated=False,
        jobs=1,
        requests=1,
        seconds=1.0,
        slowest=[],
        results="stdout",
        downloads=None,
    )
    text = "\n".join(summary.lines())
    assert "1 job:" in text
    assert "1 jobs" not in text
    assert "requests: 1 (1.0 per job)" in text


def test_json_log(capsys):
    """--log-format json: every stderr line is one JSON object, the summary last."""
    code = main(["run", "--emulator", "--count", "2", "--log-format", "json"])
    _, err = capsys.readouterr()
    events = [json.loads(line) for line in err.splitlines()]
    assert 0 == code
    assert "summary" == events[-1]["event"]
    assert 2 == events[-1]["statuses"]["succeeded"]
    assert 2 == sum(e["event"] == "accepted" for e in events)
    assert 2 == sum(e["event"] == "finished" for e in events)


def test_quiet_says_only_the_summary(capsys):
    """--quiet: no per-job lines, only the summary."""
    assert 0 == main(["run", "--emulator", "--count", "2", "--quiet"])
    err = capsys.readouterr().err
    assert "accepted" not in err
    assert "finished" not in err
    assert "2 jobs: 2 succeeded" in err


def test_without_rich_the_plain_log_and_a_hint(monkeypatch, capsys):
    """On a terminal without rich installed: the plain log, and one line saying how to get it."""
    monkeypatch.setattr(_report, "stderr_is_terminal", lambda: True)
    monkeypatch.setitem(__import__("sys").modules, "rich", None)
    monkeypatch.setitem(__import__("sys").modules, "rich.progress", None)
    assert 0 == main(["run", "--emulator", "--count", "1"])
    err = capsys.readouterr().err
    assert 1 == err.count("runcomfy-async[cli]")
    assert "accepted  #0" in err


async def test_status_result_cancel_wait_words(capsys, fake_env):
    """Single calls use the batch's words, and cancel says the truth about billing (#8 item 8)."""
    async with FakeRunComfy(time_scale=0.001, slots=1) as fake:
        fake_env(fake)
        request = ImageToVideo(prompt="p", image_url=sample_image_data_uri(640, 480))
        async with RunComfy(token=fake.config.token, base_url=fake.base_url) as client:
            done = await client.submit(request)
        rid = done.request_id

        assert 0 == await run_main("status", rid)
        assert {"request_id": rid, "status": "succeeded"} == json.loads(capsys.readouterr().out)

        assert 0 == await run_main("result", rid)
        assert "succeeded" == json.loads(capsys.readouterr().out)["status"]

        assert 0 == await run_main("cancel", rid)
        out, err = capsys.readouterr()
        assert json.loads(out)["cancelled"] is False
        assert "already finished" in err
        assert "billed" not in err

        async with RunComfy(token=fake.config.token, base_url=fake.base_url) as client:
            submissions = [await client.api.submit(request) for _ in range(2)]
        ids = [s.request_id for s in submissions]
        assert 0 == await run_main("wait", *ids)
        waited = lines(capsys.readouterr().out)
        assert set(ids) == {w["request_id"] for w in waited}
        assert {"succeeded"} == {w["status"] for w in waited}
        assert {True} == {w["billed"] for w in waited}

        assert 1 == await run_main("result", "no-such-id")
        err = capsys.readouterr().err
        assert "NotFoundError" in err
        assert 1 == err.count("no-such-id")


def test_single_call_needs_token(capsys):
    """Status, result, cancel and wait never fall back to the emulator."""
    assert 2 == main(["status", "abc"])
    assert "no RunComfy token" in capsys.readouterr().err


def test_version_and_help(capsys):
    """--version and --help exit 0; the emulator's help names this command and its defaults."""
    assert 0 == main(["--version"])
    assert "runcomfy-async" in capsys.readouterr().out
    assert 0 == main(["run", "--help"])
    assert "--batch" in capsys.readouterr().out
    assert 0 == main(["emulator", "--help"])
    text = capsys.readouterr().out
    assert "usage: runcomfy-async emulator" in text
    assert "--time-scale" in text
    assert "(default: 8765)" in text
    assert "python -m" not in text


def test_docs_name_every_option_and_status():
    """docs/cli.md documents every option of every subcommand, and every status."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    for name, sub in commands.choices.items():
        assert f"`{name}`" in text, name
        for action in sub._actions:
            for option in action.option_strings:
                if option not in {"-h", "--help"}:
                    assert f"`{option}" in text, (name, option)
    for status in STATUSES:
        assert f"| `{status}` |" in text, status


async def test_journal_resume_pays_nothing_twice(tmp_path, capsys, fake_env):
    """Run again with the same --journal: every key is known, nothing is submitted again."""
    (tmp_path / "cat.png").write_bytes(sample_png(640, 480))
    batch = tmp_path / "jobs.csv"
    batch.write_text("key,prompt,image\ncat,a cat,cat.png\ndog,a dog,cat.png\n")
    journal = tmp_path / "journal.sqlite"
    async with FakeRunComfy(time_scale=0.001) as fake:
        fake_env(fake)
        assert 0 == await run_main("run", "--batch", str(batch), "--journal", str(journal))
        first = {r["key"]: r for r in lines(capsys.readouterr().out)}
        assert 2 == fake.count("submit")
        assert 0 == await run_main("run", "--batch", str(batch), "--journal", str(journal))
        again = {r["key"]: r for r in lines(capsys.readouterr().out)}
        assert 2 == fake.count("submit")
    assert {"cat", "dog"} == set(first) == set(again)
    assert {k: r["request_id"] for k, r in first.items()} == {
        k: r["request_id"] for k, r in again.items()
    }
    assert {"succeeded"} == {r["status"] for r in again.values()}
