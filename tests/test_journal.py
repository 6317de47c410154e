"""SQLiteJournal: round trips, resume queries, group commit, one writer, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import attrs
import pytest

from runcomfy_async import ImageToVideo
from runcomfy_async._client import content_key
from runcomfy_async._journal import (
    ENDINGS,
    JournalError,
    JournalRecord,
    NullJournal,
    SQLiteJournal,
)
from runcomfy_async.testing import sample_png

FINGERPRINT = {"prompt": "waves at dusk", "image": {"source": "a.png", "sha256": "ab12"}}
RESULT = {"request_id": "r-1", "video_url": "https://cdn.example/v.mp4", "cost": 0.25}
ROOT = Path(__file__).resolve().parents[1]

skip_on_windows = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


@pytest.fixture
def path(tmp_path):
    return tmp_path / "batch.journal"


@pytest.fixture
async def journal(path):
    async with SQLiteJournal(path) as opened:
        yield opened


def run_python(code: str, *args: str, **kwargs) -> subprocess.Popen[str]:
    """Start a Python child running *code* (this checkout on its path)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        text=True,
        **kwargs,
    )


# -- the store ----------------------------------------------------------------------


async def test_round_trip_of_one_job(journal):
    """Intent, acceptance, states and the ending read back as written."""
    await journal.intent("k1", "some/model", FINGERPRINT)
    assert JournalRecord(key="k1", model_id="some/model", fingerprint=FINGERPRINT) == attrs.evolve(
        await journal.lookup("k1"), created=None, updated=None
    )

    await journal.accepted("k1", "r-1")
    await journal.state("k1", "queued")
    queued = await journal.lookup("k1")
    assert ("r-1", "queued") == (queued.request_id, queued.state)

    await journal.state("k1", "running")
    await journal.finished("k1", "succeeded", result=RESULT)
    done = await journal.lookup("k1")
    assert ("succeeded", RESULT, None) == (done.state, done.result, done.error)
    assert done.created <= done.updated


async def test_lookup_of_an_unknown_key_is_none(journal):
    """Nothing written, nothing known."""
    assert None is await journal.lookup("nobody")


async def test_failed_job_keeps_its_error(journal):
    """An ending with an error keeps its message and no result."""
    await journal.intent("k", "m", {})
    await journal.accepted("k", "r")
    await journal.finished("k", "failed", error="the model run failed")
    record = await journal.lookup("k")
    assert ("failed", None, "the model run failed", "r") == (
        record.state,
        record.result,
        record.error,
        record.request_id,
    )


async def test_unfinished_lists_what_a_resume_must_see_in_order(journal):
    """In flight, accepted, alive, uncertain and running-on jobs; not the settled ones."""
    steps = {
        "a-intent": [],
        "b-accepted": [("accepted", "r-b")],
        "c-queued": [("accepted", "r-c"), ("state", "queued")],
        "d-running": [("accepted", "r-d"), ("state", "running")],
        "e-succeeded": [("accepted", "r-e"), ("finished", "succeeded")],
        "f-uncertain": [("finished", "uncertain")],
        "g-running-on": [("accepted", "r-g"), ("finished", "running_on")],
        "h-failed": [("accepted", "r-h"), ("finished", "failed")],
        "i-cancelled": [("accepted", "r-i"), ("finished", "cancelled")],
        "j-timed-out": [("accepted", "r-j"), ("finished", "timed_out")],
        "k-error": [("finished", "error")],
    }
    for key, actions in steps.items():
        await journal.intent(key, "m", {"n": key})
        for action, value in actions:
            if action == "finished":
                await journal.finished(key, value)
            else:
                await getattr(journal, action)(key, value)

    unfinished = await journal.unfinished()

    assert [
        ("a-intent", "intent", None),
        ("b-accepted", "accepted", "r-b"),
        ("c-queued", "queued", "r-c"),
        ("d-running", "running", "r-d"),
        ("f-uncertain", "uncertain", None),
        ("g-running-on", "running_on", "r-g"),
    ] == [(r.key, r.state, r.request_id) for r in unfinished]
    assert {
        "intent": 1,
        "accepted": 1,
        "queued": 1,
        "running": 1,
        "succeeded": 1,
        "uncertain": 1,
        "running_on": 1,
        "failed": 1,
        "cancelled": 1,
        "timed_out": 1,
        "error": 1,
    } == await journal.counts()
    assert list(steps) == [r.key for r in await journal.records()]


@pytest.mark.parametrize("state", ["accepted", "queued", "running", "succeeded", "running_on"])
async def test_a_second_intent_for_a_paid_live_or_done_job_is_refused(journal, state):
    """The journal itself refuses to record a second paid submit for one key."""
    await journal.intent("k", "m", {})
    await journal.accepted("k", "r-1")
    if state in ENDINGS:
        await journal.finished("k", state)
    elif state != "accepted":
        await journal.state("k", state)

    with pytest.raises(JournalError, match="pay twice") as caught:
        await journal.intent("k", "m", {})

    assert "r-1" == caught.value.request_id
    assert ("r-1", state) == (
        (await journal.lookup("k")).request_id,
        (await journal.lookup("k")).state,
    )


@pytest.mark.parametrize("ending", ["uncertain", "failed", "cancelled", "timed_out", "error"])
async def test_a_new_intent_after_an_ending_without_a_live_job_starts_over(journal, ending):
    """Resubmitting an uncertain (or failed) job writes a fresh intent."""
    await journal.intent("k", "m", {"v": 1})
    await journal.finished("k", ending, error="lost")

    await journal.intent("k", "m", {"v": 2})

    record = await journal.lookup("k")
    assert ("intent", None, None, {"v": 2}) == (
        record.state,
        record.request_id,
        record.error,
        record.fingerprint,
    )


async def test_a_refused_write_leaves_the_rest_of_its_group(journal):
    """One refused intent in a group commit fails alone; the others are written."""
    await journal.intent("paid", "m", {})
    await journal.accepted("paid", "r")

    outcomes = await asyncio.gather(
        journal.intent("a", "m", {}),
        journal.intent("paid", "m", {}),
        journal.intent("b", "m", {}),
        return_exceptions=True,
    )

    assert [None, JournalError, None] == [
        type(o) if isinstance(o, Exception) else o for o in outcomes
    ]
    assert ["paid", "a", "b"] == [r.key for r in await journal.records()]


async def test_an_outcome_enum_is_written_as_its_word(journal):
    """The engine's Outcome (a str enum) reads back as the plain word."""
    from runcomfy_async._job import Outcome  # noqa: PLC0415

    await journal.intent("k", "m", {})
    await journal.finished("k", Outcome.UNCERTAIN, error="answer lost")
    raw = await journal._ask(lambda c: c.execute("SELECT state FROM jobs").fetchone()[0])
    assert ("uncertain", "uncertain") == (raw, (await journal.lookup("k")).state)
    assert str is type(raw)


async def test_a_late_poll_does_not_bring_an_ended_job_back(journal):
    """A state change after the ending is ignored."""
    await journal.intent("k", "m", {})
    await journal.accepted("k", "r")
    await journal.finished("k", "cancelled")
    await journal.state("k", "running")
    assert "cancelled" == (await journal.lookup("k")).state


async def test_a_reattached_running_on_job_moves_again(journal):
    """A job left running at close is followed again by a later session."""
    await journal.intent("k", "m", {})
    await journal.accepted("k", "r")
    await journal.finished("k", "running_on")
    await journal.state("k", "running")
    await journal.finished("k", "succeeded", result=RESULT)
    assert "succeeded" == (await journal.lookup("k")).state


async def test_an_acceptance_without_intent_is_still_recorded(journal):
    """A billed request id is never dropped, even from an engine that skipped the intent."""
    await journal.accepted("k", "r-9")
    record = await journal.lookup("k")
    assert ("accepted", "r-9") == (record.state, record.request_id)


async def test_an_ending_of_an_unknown_key_is_ignored(journal):
    """A job that ended before its intent was never paid: nothing to remember."""
    await journal.finished("never-sent", "cancelled", error="closed before sending")
    await journal.state("never-sent", "running")
    assert [] == await journal.records()


@pytest.mark.parametrize(
    ("method", "word"), [("state", "succeeded"), ("state", "intent"), ("finished", "queued")]
)
async def test_unknown_words_are_refused(journal, method, word):
    """State changes take progress words; endings take outcome words."""
    with pytest.raises(ValueError, match="must be one of"):
        await getattr(journal, method)("k", word)


async def test_a_cancelled_intent_is_taken_back(journal):
    """A caller cancelled while its intent is written never sends: no uncertain job appears."""
    await journal.intent("old", "m", {"v": 1})
    await journal.finished("old", "uncertain", error="answer lost")

    for key in ("new", "old"):
        task = asyncio.create_task(journal.intent(key, "m", {"v": 2}))
        await asyncio.sleep(0)  # the intent is queued, not yet answered
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert None is await journal.lookup("new")
    old = await journal.lookup("old")
    assert ("uncertain", "answer lost", {"v": 1}) == (old.state, old.error, old.fingerprint)


async def test_models_round_trip_and_persist(path):
    """The learned run-time models are kept by model key, across sessions."""
    async with SQLiteJournal(path) as journal:
        assert {} == await journal.load_models()
        await journal.save_models({"a/model": {"mean": 12.5}, "b/model": {"mean": 3.0}})
        await journal.save_models({"a/model": {"mean": 20.0}})
    async with SQLiteJournal(path) as journal:
        assert {"a/model": {"mean": 20.0}, "b/model": {"mean": 3.0}} == (
            await journal.load_models()
        )


async def test_everything_persists_across_sessions(path):
    """A closed journal reopens with every record."""
    async with SQLiteJournal(path) as journal:
        await journal.intent("k", "m", FINGERPRINT)
        await journal.accepted("k", "r")
    async with SQLiteJournal(path) as journal:
        record = await journal.lookup("k")
    assert ("accepted", "r", FINGERPRINT) == (record.state, record.request_id, record.fingerprint)


# -- the hot path ---------------------------------------------------------------------


async def test_concurrent_writes_share_one_commit(journal):
    """32 intents asked in the same event-loop turn cost one transaction."""
    before = journal.commits
    await asyncio.gather(*(journal.intent(f"k{i}", "m", {"i": i}) for i in range(32)))
    assert 1 == journal.commits - before
    assert 32 == len(await journal.records())


async def test_calls_apply_in_the_order_made_even_unawaited(journal):
    """A job's whole life started at once lands in call order, in one commit."""
    before = journal.commits
    await asyncio.gather(
        journal.intent("k", "m", {}),
        journal.accepted("k", "r"),
        journal.state("k", "queued"),
        journal.state("k", "running"),
        journal.finished("k", "succeeded", result=RESULT),
        journal.state("k", "running"),  # a late poll: ignored
    )
    assert 1 == journal.commits - before
    record = await journal.lookup("k")
    assert ("succeeded", "r", RESULT) == (record.state, record.request_id, record.result)


async def test_writes_that_queue_behind_a_commit_join_the_next_one(journal):
    """Under load the groups grow: 2,000 writes in 50 waves cost at most one commit a wave."""
    before = journal.commits

    async def wave(number: int) -> None:
        await asyncio.gather(*(journal.intent(f"{number}-{i}", "m", {}) for i in range(40)))

    await asyncio.gather(*(wave(n) for n in range(50)))

    assert 2000 == sum((await journal.counts()).values())
    assert journal.commits - before <= 50


async def test_the_writes_run_off_the_event_loop(journal):
    """The connection lives in the journal's own thread, never the loop's."""
    seen = await journal._ask(lambda _: threading.current_thread())
    assert seen is journal._writer.thread
    assert seen is not threading.current_thread()


async def test_durability_settings(path):
    """WAL, synchronous NORMAL by default (process crash safe), FULL on request."""
    for fsync, expected in ((False, 1), (True, 2)):
        async with SQLiteJournal(path, fsync=fsync) as journal:
            mode = await journal._ask(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
            sync = await journal._ask(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert ("wal", expected) == (mode, sync)


# -- lifecycle and one writer ----------------------------------------------------------


async def test_a_second_opener_in_this_process_is_refused(path):
    """Two journal objects on one file would interleave their writes: the second is refused."""
    async with SQLiteJournal(path):
        second = SQLiteJournal(path)
        with pytest.raises(JournalError, match="is open in process") as caught:
            await second.open()
        assert str(os.getpid()) in str(caught.value)
    async with SQLiteJournal(path) as third:  # free again once closed
        assert [] == await third.records()


async def test_a_second_process_is_refused(path):
    """Another process cannot open a journal this one has open."""
    code = """
        import asyncio, sys
        from runcomfy_async._journal import JournalError, SQLiteJournal

        async def main():
            try:
                await SQLiteJournal(sys.argv[1]).open()
            except JournalError as exc:
                print(exc)
                return 3
            return 0

        sys.exit(asyncio.run(main()))
    """
    async with SQLiteJournal(path):
        child = run_python(code, str(path), stdout=subprocess.PIPE)
        out, _ = await asyncio.to_thread(child.communicate, timeout=30)
    assert 3 == child.returncode
    assert f"is open in process {os.getpid()}" in out


async def test_use_outside_open_and_reopening_are_refused(path):
    """A journal is opened once; before and after, it refuses work clearly."""
    journal = SQLiteJournal(path)
    assert "<SQLiteJournal" in repr(journal)
    with pytest.raises(JournalError, match="unopened"):
        await journal.lookup("k")
    await journal.open()
    assert "open commits=" in repr(journal)
    await journal.close()
    await journal.close()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        await journal.intent("k", "m", {})
    with pytest.raises(JournalError, match="opened once"):
        await journal.open()


async def test_a_journal_from_a_newer_version_is_refused(path):
    """A schema this code does not know is never written over."""
    async with SQLiteJournal(path):
        pass
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    connection.close()
    for _ in range(2):  # the same answer twice: a failed open releases the lock
        with pytest.raises(JournalError, match="schema version 99"):
            await SQLiteJournal(path).open()


async def test_a_file_that_is_not_a_journal_is_refused(path):
    """Garbage gives a JournalError naming the file, not a bare sqlite3 error."""
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalError, match=str(path.name)):
        await SQLiteJournal(path).open()


async def test_a_missing_folder_is_a_journal_error(tmp_path):
    """The journal's folder must exist; the error says which file."""
    with pytest.raises(JournalError, match="nowhere"):
        await SQLiteJournal(tmp_path / "nowhere" / "j.journal").open()


async def test_read_lists_a_journal_while_another_writes_it(path, journal):
    """``read`` needs no lock: listing a running batch's journal works."""
    await journal.intent("k", "m", {})
    await journal.accepted("k", "r")
    records = await SQLiteJournal.read(path)
    assert [("k", "accepted")] == [(r.key, r.state) for r in records]
    with pytest.raises(JournalError, match="no journal"):
        await SQLiteJournal.read(path.with_name("other.journal"))


async def test_null_journal_knows_nothing():
    """The default journal writes nothing and finds nothing."""
    journal = NullJournal()
    await journal.intent("k", "m", {})
    await journal.accepted("k", "r")
    await journal.state("k", "running")
    await journal.finished("k", "succeeded", result=RESULT)
    assert (None, ()) == (await journal.lookup("k"), await journal.unfinished())
    assert "<NullJournal>" == repr(journal)


# -- crashes ------------------------------------------------------------------------------

_WRITER = """
    import asyncio, sys
    from runcomfy_async._journal import SQLiteJournal

    async def main():
        journal = SQLiteJournal(sys.argv[1])
        await journal.open()
        number = 0
        while True:
            keys = [f"k{number + i}" for i in range(8)]
            await asyncio.gather(*(journal.intent(k, "m", {"k": k}) for k in keys))
            await asyncio.gather(*(journal.accepted(k, "r-" + k) for k in keys))
            print(number + 7, flush=True)  # every key up to here is committed
            number += 8

    asyncio.run(main())
"""


@skip_on_windows
async def test_kill_9_loses_no_awaited_write(path):
    """A writer killed at a random moment mid-stream loses nothing it had been told was written."""
    child = run_python(_WRITER, str(path), stdout=subprocess.PIPE)
    try:
        acknowledged = -1
        # Wait for a few hundred acknowledged writes, so the kill lands
        # mid-stream: transactions were in flight, by construction.
        while acknowledged < 400:
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, "the writer died on its own"
            acknowledged = int(line)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        await asyncio.to_thread(child.communicate)
    assert -signal.SIGKILL == child.returncode
    # Readable as the dead writer left it (its -wal and -shm files beside it).
    left = {r.key for r in await SQLiteJournal.read(path)}
    assert {f"k{number}" for number in range(acknowledged + 1)} <= left

    async with SQLiteJournal(path) as journal:  # the dead writer's lock is gone
        records = {r.key: r for r in await journal.records()}
        check = await journal._ask(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
    assert "ok" == check
    for number in range(acknowledged + 1):
        record = records[f"k{number}"]
        assert ("accepted", f"r-k{number}") == (record.state, record.request_id)


_HALF_WRITTEN = """
    import asyncio, os, sqlite3, sys
    from runcomfy_async._journal import SQLiteJournal

    async def main():
        journal = SQLiteJournal(sys.argv[1])
        await journal.open()
        await journal.intent("kept", "m", {})
        # A transaction that has written but not committed when the process dies.
        raw = sqlite3.connect(sys.argv[1], isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany(
            "INSERT INTO jobs VALUES (?, 'm', '{}', NULL, 'intent', NULL, NULL, 0, 0)",
            [(f"lost-{i}",) for i in range(5000)],
        )
        os._exit(9)

    asyncio.run(main())
"""


async def test_a_transaction_cut_by_death_is_rolled_back(path):
    """Rows of a transaction that never committed are gone after the crash; the rest stand."""
    child = run_python(_HALF_WRITTEN, str(path))
    assert 9 == await asyncio.to_thread(child.wait, 30)

    async with SQLiteJournal(path) as journal:
        assert ["kept"] == [r.key for r in await journal.records()]
        check = await journal._ask(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
    assert "ok" == check


# -- through the client ---------------------------------------------------------------------


async def test_a_full_run_writes_results_and_never_the_token(tmp_path):
    """A batch through RunComfy(journal=...) records every job, and the token is nowhere in it."""
    from _security_helpers import TOKEN, assert_token_absent  # noqa: PLC0415

    from runcomfy_async import ImageToVideo, RunComfy  # noqa: PLC0415
    from runcomfy_async.testing import FakeRunComfy, sample_image_data_uri  # noqa: PLC0415

    path = tmp_path / "run.journal"
    image = sample_image_data_uri(640, 480)
    requests = [ImageToVideo(prompt=f"job {n}", image_url=image, seed=n) for n in range(8)]
    async with FakeRunComfy(token=TOKEN, time_scale=0.001, failure_rate=0.5, seed=2) as fake:
        async with RunComfy(TOKEN, base_url=fake.base_url, journal=path) as client:
            jobs = client.submit_many(requests)
            outcomes = await client.gather(jobs)

    async with SQLiteJournal(path) as journal:
        records = {r.key: r for r in await journal.records()}
        models = await journal.load_models()
    assert {job.key for job in jobs} == set(records)
    for job, outcome in zip(jobs, outcomes, strict=True):
        record = records[job.key]
        assert job.request_id == record.request_id
        if isinstance(outcome, Exception):
            assert ("failed", True) == (record.state, bool(record.error)), record
        else:
            assert ("succeeded", outcome.video_url) == (record.state, record.result["video_url"])
    assert {"succeeded", "failed"} == {r.state for r in records.values()}
    # Every byte the journal left on disk (a closed journal has no -wal file,
    # but look at any that is there) and its lock file.
    for file in tmp_path.iterdir():
        assert_token_absent(file.read_bytes())
    assert_token_absent(json.dumps(models))


def test_a_moved_image_file_keeps_its_job_key(tmp_path):
    """A job key counts a local image by content: moving the file does not make a new job."""
    first = tmp_path / "a.png"
    first.write_bytes(sample_png(640, 480))
    before = content_key(ImageToVideo.from_file(first, prompt="a cat"))
    moved = first.rename(tmp_path / "renamed.png")
    assert before == content_key(ImageToVideo.from_file(moved, prompt="a cat"))
    assert before != content_key(ImageToVideo.from_file(moved, prompt="a dog"))
