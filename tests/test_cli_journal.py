"""The command's durable batches: a journal beside --output, resume, --resubmit-uncertain, `jobs`.

Each run is in-process against the emulator. A crash is staged by editing
what a finished run left (its results file and its journal) into what a
kill at some moment leaves: a job accepted and not followed, a submit in
flight (an intent), a line cut off mid-write, a job never sent. The real
kill -9 test of the command is in ``test_crash.py``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio.to_thread
import pytest

from runcomfy_async import SQLiteJournal
from runcomfy_async.cli import _report, main
from runcomfy_async.testing import FakeRunComfy

TOKEN_VARS = ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_API_KEY")
IMAGE = "https://example.com/a.png"
KEYS = ("a", "b", "c", "d")


@pytest.fixture(autouse=True)
def plain_env(monkeypatch, tmp_path):
    """No token, no base URL, a plain log, and a scratch working folder."""
    for name in (*TOKEN_VARS, "RUNCOMFY_MODEL_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_report, "stderr_is_terminal", lambda: False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def fake(monkeypatch):
    """An emulator the command reaches as a user's own API (a token, a base URL)."""
    async with FakeRunComfy(time_scale=0.001) as emulator:
        monkeypatch.setenv("RUNCOMFY_API_TOKEN", emulator.config.token)
        monkeypatch.setenv("RUNCOMFY_MODEL_API_BASE_URL", emulator.base_url)
        yield emulator


async def run_main(*argv: str) -> int:
    # main() runs its own event loop: a worker thread, while this loop serves
    # the emulator.
    return await anyio.to_thread.run_sync(main, list(argv))


def write_batch(folder: Path) -> Path:
    batch = folder / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"key": key, "prompt": f"job {key}", "image": IMAGE, "seed": n}) + "\n"
            for n, key in enumerate(KEYS)
        )
    )
    return batch


def results(path: Path) -> dict[str, dict]:
    lines = [json.loads(text) for text in path.read_text().splitlines()]
    by_key = {line["key"]: line for line in lines}
    assert len(by_key) == len(lines), "a key has two lines"
    return by_key


def edit_journal(path: Path, *statements: tuple[str, tuple]) -> None:
    """Change the journal as a run killed at some moment would have left it."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            for sql, args in statements:
                connection.execute(sql, args)
    finally:
        connection.close()


def keep_lines(path: Path, keep: set[str], extra: str = "") -> bytes:
    """Keep only *keep*'s lines (as written) and append *extra*; return the kept bytes."""
    kept = b"".join(
        line
        for line in path.read_bytes().splitlines(keepends=True)
        if json.loads(line)["key"] in keep
    )
    path.write_bytes(kept + extra.encode())
    return kept


async def test_journal_is_kept_beside_output_and_a_rerun_pays_nothing(fake, tmp_path, capsys):
    """--output OUT keeps OUT.journal; the same command again sends nothing, writes nothing."""
    batch = write_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    err = capsys.readouterr().err
    journal = tmp_path / "results.jsonl.journal"
    assert journal.read_bytes()[:16] == b"SQLite format 3\x00"
    assert f"journal: {journal}" in err
    assert 4 == fake.count("submit")
    first = out.read_bytes()
    assert set(KEYS) == set(results(out))

    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    err = capsys.readouterr().err
    assert 4 == fake.count("submit")
    assert first == out.read_bytes()  # not rewritten, nothing appended
    assert "4 of 4 jobs already have their line" in err
    assert "4 succeeded" in err  # the summary counts the lines already there
    assert "resumed: 4 of 4 lines were already in" in err


async def test_resume_after_a_crash(fake, tmp_path, capsys):
    """A killed run's batch, run again: one line per job, each job paid for once.

    Staged: ``a``'s submit was in flight (an intent: uncertain), ``b`` was
    accepted and never followed, ``c`` has its line, ``d`` was never sent,
    and the results file ends in half a line.
    """
    batch = write_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    journal = tmp_path / "results.jsonl.journal"
    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    before = results(out)
    capsys.readouterr()
    edit_journal(
        journal,
        ("UPDATE jobs SET state = 'intent', request_id = NULL, result = NULL WHERE key = 'a'", ()),
        ("UPDATE jobs SET state = 'accepted', result = NULL WHERE key = 'b'", ()),
        ("DELETE FROM jobs WHERE key = 'd'", ()),
    )
    kept = keep_lines(out, {"c"}, extra='{"index": 3, "key": "d", "requ')

    assert 1 == await run_main("run", "--batch", str(batch), "--output", str(out))
    err = capsys.readouterr().err
    after = results(out)
    assert out.read_bytes().startswith(kept)  # appended after what was there
    assert set(KEYS) == set(after)
    assert 5 == fake.count("submit")  # d alone was sent
    assert before["b"]["request_id"] == after["b"]["request_id"]  # followed, not re-sent
    assert "succeeded" == after["b"]["status"]
    assert before["c"] == after["c"]
    assert "succeeded" == after["d"]["status"]
    assert ("uncertain", None, None) == (
        after["a"]["status"],
        after["a"]["billed"],
        after["a"]["request_id"],
    )
    assert "removed a last line cut off by a crash" in err
    assert "1 uncertain" in err  # said up front
    assert "1 job uncertain" in err  # and at the end, by name, with what to do
    assert "--resubmit-uncertain" in err
    assert "\nruncomfy-async:   a\n" in err
    assert "3 succeeded, 1 uncertain" in err

    # Asked by name, the uncertain job is sent again; its line is replaced.
    assert 0 == await run_main(
        "run", "--batch", str(batch), "--output", str(out), "--resubmit-uncertain"
    )
    assert 6 == fake.count("submit")
    again = results(out)
    assert set(KEYS) == set(again)
    assert {"succeeded"} == {line["status"] for line in again.values()}
    assert after["b"] == again["b"]
    capsys.readouterr()

    # And the finished batch, run again, sends and writes nothing.
    final = out.read_bytes()
    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    assert 6 == fake.count("submit")
    assert final == out.read_bytes()


async def test_resume_collects_left_running_and_sends_the_unsent(fake, tmp_path, capsys):
    """Lines of jobs left on the server, or never sent, are settled again and replaced."""
    batch = write_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    journal = tmp_path / "results.jsonl.journal"
    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    before = results(out)
    capsys.readouterr()
    # As a run quit with two Ctrl-C leaves them: b running on the server, c not sent.
    left = {**before["b"], "status": "running", "video_url": None, "urls": [], "cost": None}
    unsent = {
        **before["c"],
        "status": "cancelled",
        "request_id": None,
        "billed": False,
        "video_url": None,
        "urls": [],
        "cost": None,
        "error": "JobCancelledError: not sent: the run was interrupted",
    }
    text = "".join(
        json.dumps({"b": left, "c": unsent}.get(key, before[key])) + "\n" for key in KEYS
    )
    out.write_text(text)
    edit_journal(
        journal,
        ("UPDATE jobs SET state = 'running_on', result = NULL WHERE key = 'b'", ()),
        ("DELETE FROM jobs WHERE key = 'c'", ()),
    )

    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    err = capsys.readouterr().err
    after = results(out)
    assert 5 == fake.count("submit")  # c alone
    assert "succeeded" == after["b"]["status"]
    assert before["b"]["request_id"] == after["b"]["request_id"]
    assert "succeeded" == after["c"]["status"]
    assert {"succeeded"} == {line["status"] for line in after.values()}
    assert "2 lines taken out, to be settled again: b (running), c (cancelled)" in err


async def test_a_resumed_failure_still_fails_the_run(fake, tmp_path, capsys):
    """The exit code and the summary count the lines already written, honestly."""
    batch = write_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    lines = [json.loads(text) for text in out.read_text().splitlines()]
    lines[0] |= {"status": "failed", "video_url": None, "urls": [], "error": "JobFailedError: x"}
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    capsys.readouterr()
    assert 1 == await run_main("run", "--batch", str(batch), "--output", str(out))
    err = capsys.readouterr().err
    assert 4 == fake.count("submit")
    assert "3 succeeded, 1 failed" in err


async def test_another_batchs_results_or_journal_are_refused(fake, tmp_path, capsys):
    """A results file or journal of another batch is a usage error; nothing is sent."""
    batch = write_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    zebra = {"index": 0, "key": "zebra", "request_id": "r", "status": "succeeded", "billed": True}
    out.write_text(json.dumps(zebra) + "\n")
    assert 2 == await run_main("run", "--batch", str(batch), "--output", str(out))
    assert "'zebra', which is not in this batch" in capsys.readouterr().err

    out.write_text("this is not JSON\n")
    assert 2 == await run_main("run", "--batch", str(batch), "--output", str(out))
    assert "not a result line of this command" in capsys.readouterr().err
    out.write_text(json.dumps({"key": "a", "index": 0}) + "\n")
    assert 2 == await run_main("run", "--batch", str(batch), "--output", str(out))
    assert "(no 'billed' field)" in capsys.readouterr().err

    out.unlink()
    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    capsys.readouterr()
    # The same keys, other prompts: the journal's outcomes are not this batch's.
    batch.write_text(batch.read_text().replace("job b", "another prompt"))
    out.unlink()
    assert 2 == await run_main("run", "--batch", str(batch), "--output", str(out))
    err = capsys.readouterr().err
    assert "key 'b' names another job in the journal" in err
    assert "belongs to another batch" in err
    assert 4 == fake.count("submit")


async def test_a_journal_in_use_is_refused(fake, tmp_path, capsys):
    """A second run of the same batch while one holds the journal: exit 2, nothing sent."""
    batch = write_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    async with SQLiteJournal(tmp_path / "results.jsonl.journal"):
        assert 2 == await run_main("run", "--batch", str(batch), "--output", str(out))
    err = capsys.readouterr().err
    assert "is open in process" in err
    assert "nothing was submitted" in err
    assert 0 == fake.count("submit")
    assert not out.exists()


async def test_no_journal_opts_out_and_replaces_the_output(fake, tmp_path, capsys):
    """--no-journal: no journal file; the batch run again is sent again."""
    batch = write_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    for _ in range(2):
        assert 0 == await run_main(
            "run", "--batch", str(batch), "--output", str(out), "--no-journal"
        )
    assert 8 == fake.count("submit")
    assert 4 == len(results(out))
    assert ["batch.jsonl", "results.jsonl"] == sorted(p.name for p in tmp_path.iterdir())
    assert "journal:" not in capsys.readouterr().err


async def test_no_journal_without_output_unless_asked(fake, tmp_path, capsys):
    """Results on stdout: no journal; --journal PATH chooses one."""
    batch = write_batch(tmp_path)
    assert 0 == await run_main("run", "--batch", str(batch))
    assert ["batch.jsonl"] == sorted(p.name for p in tmp_path.iterdir())
    chosen = tmp_path / "mine.sqlite"
    out = tmp_path / "results.jsonl"
    assert 0 == await run_main("run", "--batch", str(batch), "--journal", str(chosen))
    assert 0 == await run_main(
        "run", "--batch", str(batch), "--journal", str(chosen), "--output", str(out)
    )
    assert 8 == fake.count("submit")  # the third run found every job in mine.sqlite
    assert chosen.is_file()
    assert not (tmp_path / "results.jsonl.journal").exists()
    assert 4 == len(results(out))
    capsys.readouterr()


def test_no_default_journal_for_the_builtin_emulator_or_a_dry_run(tmp_path, capsys):
    """The built-in emulator's jobs die with the process, and a dry run writes nothing."""
    out = tmp_path / "results.jsonl"
    assert 0 == main(["run", "--emulator", "--count", "2", "--output", str(out)])
    assert ["results.jsonl"] == [p.name for p in tmp_path.iterdir()]
    assert 2 == len(results(out))
    assert 0 == main(["run", "--emulator", "--count", "2", "--output", str(out), "--dry-run"])
    assert ["results.jsonl"] == [p.name for p in tmp_path.iterdir()]
    assert 2 == main(["run", "--journal", "x", "--no-journal"])  # one or the other
    capsys.readouterr()


async def test_jobs_lists_a_journal_also_while_a_run_holds_it(fake, tmp_path, capsys):
    """`jobs` shows each job's key, request id, state, billing and cost, and a count."""
    batch = write_batch(tmp_path)
    out = tmp_path / "results.jsonl"
    journal = tmp_path / "results.jsonl.journal"
    assert 0 == await run_main("run", "--batch", str(batch), "--output", str(out))
    lines = results(out)
    edit_journal(
        journal,
        ("UPDATE jobs SET state = 'intent', request_id = NULL, result = NULL WHERE key = 'a'", ()),
        ("UPDATE jobs SET state = 'accepted', result = NULL WHERE key = 'b'", ()),
    )
    capsys.readouterr()

    # Held by a writer, as during a run: reading needs no lock.
    async with SQLiteJournal(journal) as held:
        await held.state("b", "running")  # a committed write the reader must see
        assert 0 == await run_main("jobs", str(journal))
        text = capsys.readouterr().out
        assert 0 == await run_main("jobs", "--json")  # the one *.journal here
        captured = capsys.readouterr()
    rows = text.splitlines()
    assert rows[0].split() == ["key", "request", "id", "state", "billed", "cost"]
    assert rows[2].split()[:3] == ["b", lines["b"]["request_id"], "running"]
    assert "4 jobs: 2 succeeded, 1 running, 1 intent" in text
    assert "billing: 3 billed, 0 not billed, 1 unknown" in text
    assert "--resubmit-uncertain" in text
    jobs = {job["key"]: job for job in map(json.loads, captured.out.splitlines())}
    assert set(KEYS) == set(jobs)
    assert (None, "intent", None) == (
        jobs["a"]["request_id"],
        jobs["a"]["state"],
        jobs["a"]["billed"],
    )
    assert lines["c"]["cost"] == jobs["c"]["cost"]
    assert lines["c"]["video_url"] == jobs["c"]["video_url"]
    assert jobs["c"]["billed"] is True
    assert "4 jobs:" in captured.err


def test_jobs_without_a_journal_is_a_usage_error(tmp_path, capsys):
    """No journal named and none here, or a file that is not one: exit 2, one clear line."""
    assert 2 == main(["jobs"])
    assert "no *.journal file here" in capsys.readouterr().err
    assert 2 == main(["jobs", str(tmp_path / "missing.journal")])
    assert "no journal at" in capsys.readouterr().err
    (tmp_path / "one.journal").write_text("not a database")
    (tmp_path / "two.journal").write_text("not a database")
    assert 2 == main(["jobs"])
    assert "several here" in capsys.readouterr().err
    assert 2 == main(["jobs", "one.journal"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err
