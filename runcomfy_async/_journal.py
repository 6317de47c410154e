"""The journal seam: what the engine writes down before and after a paid call.

RunComfy has no idempotency key, so the only way a batch can survive its own
process (kill -9, OOM, a closed laptop) without paying twice is to write down
each paid call's *intent* before it leaves and its request id the moment it
is accepted. The engine awaits a :class:`Journal` at exactly those points, and
at every state change and ending; a journal that fails raises, and the job
fails with it (never swallowed: a lost record is a lost billed job).

:class:`NullJournal` (the default) remembers nothing. :class:`SQLiteJournal`
keeps it all in one SQLite file:

- **One writer.** A lock file beside the journal (``<path>.lock``) is held
  while it is open; a second opener, in this process or another, is refused
  with :class:`JournalError` at once instead of interleaving its writes.
- **The event loop never touches the disk.** One dedicated thread owns the
  SQLite connection; the loop hands it work and awaits the answer.
- **Group commit.** Everything asked of the journal in one event-loop turn
  goes to the thread as one batch, and the thread runs every batch that
  waited while it was busy in one transaction: 32 workers writing their
  intents at once cost one commit, and a busy disk makes batches larger, not
  queues longer.
- **Durability.** WAL mode with ``synchronous=NORMAL``: a commit has been
  written to the operating system before the awaiting call returns, so it
  survives the process dying in any way (kill -9 included); what a power cut
  or an OS crash may lose is the last few commits (the file stays
  consistent). ``fsync=True`` makes every commit reach the disk before it
  returns (``synchronous=FULL``), for machines that may lose power mid-batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import attrs

from ._errors import JournalError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "ENDINGS",
    "Journal",
    "JournalError",
    "JournalRecord",
    "NullJournal",
    "SQLiteJournal",
]

SCHEMA_VERSION: Final = 1
"""The layout this code writes; a journal written by a newer one is refused."""

ENDINGS: Final = frozenset(
    {"succeeded", "failed", "cancelled", "timed_out", "error", "uncertain", "running_on"}
)
"""Outcome words :meth:`Journal.finished` takes."""

_PROGRESS: Final = frozenset({"accepted", "queued", "running"})
"""State words :meth:`Journal.state` takes."""

_UNFINISHED: Final = ("intent", "accepted", "queued", "running", "uncertain", "running_on")
"""States that a resume must look at again: in flight, billed and alive, or unknown."""

_PAID_AND_KEPT: Final = frozenset({"accepted", "queued", "running", "succeeded", "running_on"})
"""States in which a new intent for the key would pay twice for one job: refused."""

_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class JournalRecord:
    """What a journal knows of one job.

    Attributes:
        key: The job's stable key.
        model_id: The model.
        fingerprint: The request as JSON, images by source and content hash.
        request_id: The server's id, once accepted (None: never accepted, or
            the submit's answer was lost: see ``state``).
        state: The last state written: ``intent`` (its submit may be in
            flight), ``accepted``, ``queued``, ``running``, or an ending
            (``succeeded``, ``failed``, ``cancelled``, ``timed_out``,
            ``error``, ``uncertain``, ``running_on``).
        result: The result as :meth:`JobResult.to_json` wrote it, if it
            succeeded.
        error: The error's message, if it ended with one.
        created: When the key was first written (Unix time), if known.
        updated: When it was last written (Unix time), if known.

    """

    key: str
    model_id: str
    fingerprint: Mapping[str, Any] = attrs.field(factory=dict)
    request_id: str | None = None
    state: str = "intent"
    result: Mapping[str, Any] | None = None
    error: str | None = None
    created: float | None = None
    updated: float | None = None


class Journal(Protocol):
    """Durable notes on paid calls; the engine awaits each before going on."""

    async def lookup(self, key: str) -> JournalRecord | None:
        """Return what is known of *key*, if anything."""
        ...

    async def intent(self, key: str, model_id: str, fingerprint: Mapping[str, Any]) -> None:
        """Record that a submit for *key* is about to leave (before the POST)."""
        ...

    async def accepted(self, key: str, request_id: str) -> None:
        """Record that the server accepted *key*'s submit as *request_id*."""
        ...

    async def state(self, key: str, state: str) -> None:
        """Record a state change seen by a poll (``queued``, ``running``)."""
        ...

    async def finished(
        self,
        key: str,
        outcome: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Record how *key* ended (an outcome word; see :class:`JournalRecord`)."""
        ...

    async def unfinished(self) -> Sequence[JournalRecord]:
        """Return every job that was accepted or in flight and has not ended."""
        ...


class NullJournal:
    """The default journal: remembers nothing, costs nothing."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<NullJournal>"

    async def lookup(self, key: str) -> JournalRecord | None:  # noqa: ARG002
        """Know nothing."""
        return None

    async def intent(self, key: str, model_id: str, fingerprint: Mapping[str, Any]) -> None:
        """Write nothing."""

    async def accepted(self, key: str, request_id: str) -> None:
        """Write nothing."""

    async def state(self, key: str, state: str) -> None:
        """Write nothing."""

    async def finished(
        self,
        key: str,
        outcome: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Write nothing."""

    async def unfinished(self) -> Sequence[JournalRecord]:
        """Know nothing."""
        return ()


# -- SQLite ----------------------------------------------------------------------

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    request_id TEXT,
    state TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_COLUMNS: Final = "key, model_id, fingerprint, request_id, state, result, error, created, updated"

_Op = Callable[[sqlite3.Connection], Any]
_Batch = list[tuple[_Op, "asyncio.Future[Any]"]]


def _dumps(value: Mapping[str, Any] | None) -> str | None:
    # Sorted and compact: the same request always reads the same on disk.
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _record(row: Sequence[Any]) -> JournalRecord:
    key, model_id, fingerprint, request_id, state, result, error, created, updated = row
    return JournalRecord(
        key=key,
        model_id=model_id,
        fingerprint=json.loads(fingerprint),
        request_id=request_id,
        state=state,
        result=None if result is None else json.loads(result),
        error=error,
        created=created,
        updated=updated,
    )


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _lock(path: Path) -> int:
    """Take the one-writer lock of the journal at *path*; return its descriptor.

    A lock on a separate file, not on the database: SQLite's own locks are
    POSIX record locks, which any ``close()`` of any descriptor of the
    database file in this process would silently drop. The operating system
    releases ours when the process dies, however it dies.
    """
    lock_path = _lock_path(path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt  # noqa: PLC0415 - Windows only

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl  # noqa: PLC0415 - POSIX only

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another process or journal object"
        raise JournalError(
            f"journal {path} is open in {who}; one journal has one writer "
            "(wait for it to finish, or give this run another journal)"
        ) from exc
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode("ascii"))
    return fd


def _unlock(fd: int) -> None:
    # Closing the descriptor releases the lock; the file stays (removing it
    # would let a waiting opener lock a file a third one no longer sees).
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


def _attempt(op: _Op, connection: sqlite3.Connection) -> tuple[Any, BaseException | None]:
    # An op checks before it writes, so one refused write (a JournalError)
    # leaves the rest of its group standing; any other error sinks the group.
    try:
        return op(connection), None
    except JournalError as exc:
        return None, exc


class _Writer:
    """The thread that owns the SQLite connection and commits in groups."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop, *, fsync: bool) -> None:
        self.path = path
        self.loop = loop
        self.fsync = fsync
        self.inbox: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self.commits = 0
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.thread = threading.Thread(
            target=self._main,
            name=f"runcomfy journal {path.name}",
            # A journal nobody closed must not hold the interpreter open at
            # exit; what it had not committed is lost as in a crash, and every
            # write that was awaited is already on disk.
            daemon=True,
        )

    def close_when_opened(self, opened: asyncio.Future[None]) -> None:
        """Close again at once: the opener was cancelled while we opened."""
        if not opened.cancelled() and opened.exception() is None:
            self.inbox.put(None)

    # -- thread side -----------------------------------------------------------------

    def _main(self) -> None:
        lock_fd: int | None = None
        connection: sqlite3.Connection | None = None
        try:
            lock_fd = _lock(self.path)
            connection = self._connect()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting opener
            if lock_fd is not None:
                _unlock(lock_fd)
            self._hand(self.opened, None, self._translate(exc))
            return
        self._hand(self.opened, None, None)
        try:
            self._serve(connection)
        finally:
            error: BaseException | None = None
            try:
                connection.close()
            except sqlite3.Error as exc:  # pragma: no cover - a failing disk
                error = self._translate(exc)
            _unlock(lock_fd)
            self._hand(self.closed, None, error)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we open and commit transactions ourselves, one
        # per group of batches.
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            connection.execute("BEGIN IMMEDIATE")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                connection.execute(statement)
            row = connection.execute(
                "SELECT value FROM meta WHERE name = 'schema_version'"
            ).fetchone()
            if row is None:
                connection.execute(
                    "INSERT INTO meta (name, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                self._refuse_version(row[0])
            connection.execute("COMMIT")
        except BaseException:
            connection.close()
            raise
        return connection

    def _refuse_version(self, version: str) -> None:
        raise JournalError(
            f"journal {self.path} has schema version {version}, written by a newer "
            f"runcomfy_async (this one reads up to {SCHEMA_VERSION}); upgrade it"
        )

    def _serve(self, connection: sqlite3.Connection) -> None:
        closing = False
        while not closing:
            first = self.inbox.get()
            if first is None:
                break
            group = list(first)
            # Everything that queued up while the last commit ran joins this one.
            while True:
                try:
                    more = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                group.extend(more)
            self._run(connection, group)

    def _run(self, connection: sqlite3.Connection, group: _Batch) -> None:
        answers: list[tuple[Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for op, _ in group:
                    answers.append(_attempt(op, connection))
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise
        except BaseException as exc:  # noqa: BLE001 - every caller of the group gets it
            answers = [(None, self._translate(exc))] * len(group)
        else:
            self.commits += 1
        for (_, future), (value, error) in zip(group, answers, strict=True):
            self._hand(future, value, error)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            error = JournalError(f"journal {self.path}: {exc}")
            error.__cause__ = exc
            return error
        if isinstance(exc, OSError):
            error = JournalError(f"journal {self.path}: {exc.strerror or exc}")
            error.__cause__ = exc
            return error
        return exc

    def _hand(self, future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
        def settle() -> None:
            if future.done():  # the awaiting task was cancelled; the write stands
                return
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

        # The loop may be gone (a journal never closed at interpreter exit).
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(settle)


class SQLiteJournal:
    """A journal in one SQLite file: survives kill -9; one writer at a time.

    Open it (the client does, when given ``journal=``) as an async context
    manager or with :meth:`open` and :meth:`close`::

        async with SQLiteJournal("batch.journal") as journal:
            record = await journal.lookup(key)

    What it stores, per job key: the model, the request's fingerprint (images
    by source and content hash, never their bytes; the API token has no way
    in), the request id, the last state, the result's JSON or the error's
    message, and when each was written. A ``models`` table keeps the learned
    run-time model between sessions (:meth:`load_models`, :meth:`save_models`).

    Calls are applied in the order they are made, whether or not each was
    awaited before the next: a writer may start many (``asyncio.gather``) and
    have them share one commit, in order.

    Args:
        path: The journal file; created with its tables if it does not exist.
            Its folder must exist.
        fsync: Make every commit reach the disk before it returns
            (``synchronous=FULL``): needed only to survive a power cut or an
            OS crash; a process crash (kill -9) loses nothing either way.

    Raises:
        JournalError: From :meth:`open`, if another process or journal object
            has it open, or it cannot be read as a journal.

    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self._path = Path(path)
        self._fsync = fsync
        self._writer: _Writer | None = None
        self._batch: _Batch = []
        self._flush_booked = False
        self._state = "unopened"

    def __repr__(self) -> str:
        commits = self._writer.commits if self._writer is not None else 0
        return f"<SQLiteJournal {str(self._path)!r} {self._state} commits={commits}>"

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    @property
    def commits(self) -> int:
        """Transactions committed since it was opened (each one a group of writes)."""
        return self._writer.commits if self._writer is not None else 0

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Lock the journal, create its tables if needed, and start its writer.

        Raises:
            JournalError: Another process or journal object has it open, it was
                written by a newer version, or it is not a journal.

        """
        if self._state != "unopened":
            raise JournalError(f"a journal object is opened once; this one is {self._state}")
        writer = _Writer(self._path, asyncio.get_running_loop(), fsync=self._fsync)
        self._state = "opening"
        writer.thread.start()
        try:
            await asyncio.shield(writer.opened)
        except BaseException:
            self._state = "closed"
            # Cancelled while the thread opens: let it close again once open,
            # so the lock is not held by a journal nobody has.
            writer.opened.add_done_callback(writer.close_when_opened)
            raise
        self._writer = writer
        self._state = "open"

    async def close(self) -> None:
        """Commit what was asked, close the file and release the lock; idempotent."""
        writer = self._writer
        if writer is None or self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        self._flush()
        writer.inbox.put(None)
        # Shielded: a close that is cancelled half-way would leave the lock held.
        await asyncio.shield(writer.closed)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the group commit ---------------------------------------------------------------

    def _ask(self, op: Callable[[sqlite3.Connection], _T]) -> asyncio.Future[_T]:
        writer = self._writer
        if writer is None or self._state != "open":
            raise JournalError(f"journal {self._path} is {self._state}: open it first")
        future: asyncio.Future[_T] = writer.loop.create_future()
        self._batch.append((op, future))
        if not self._flush_booked:
            # Whatever else is asked in this event-loop turn joins the batch.
            self._flush_booked = True
            writer.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_booked = False
        if self._batch and self._writer is not None:
            batch, self._batch = self._batch, []
            self._writer.inbox.put(batch)

    # -- the Journal protocol ------------------------------------------------------------

    async def lookup(self, key: str) -> JournalRecord | None:
        """Return what is known of *key*, if anything."""

        def op(connection: sqlite3.Connection) -> JournalRecord | None:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE key = ?",  # noqa: S608 - constant columns
                (key,),
            ).fetchone()
            return None if row is None else _record(row)

        return await self._ask(op)

    async def intent(self, key: str, model_id: str, fingerprint: Mapping[str, Any]) -> None:
        """Record that a submit for *key* is about to leave (before the POST).

        A key seen before is written over (a retry of a failed, cancelled,
        timed-out or uncertain job), unless its job is accepted, alive or
        succeeded: then a second submit would pay twice for one key. If the
        caller is cancelled while this waits, the intent is taken back (the
        caller never got to send), and the key reads as it did before.

        Raises:
            JournalError: The key's job is accepted, alive or succeeded.

        """
        text = _dumps(fingerprint)
        # What the key held before, for taking the intent back (see below).
        before: list[tuple[Any, ...] | None] = []

        def op(connection: sqlite3.Connection) -> None:
            row = connection.execute(
                "SELECT model_id, fingerprint, request_id, state, result, error, updated"
                " FROM jobs WHERE key = ?",
                (key,),
            ).fetchone()
            if row is not None and row[3] in _PAID_AND_KEPT:
                raise JournalError(
                    f"job {key!r} is already {row[3]} as request {row[2]}: "
                    "a second submit would pay twice for it",
                    request_id=row[2],
                )
            before.append(row)
            now = time.time()
            connection.execute(
                "INSERT INTO jobs (key, model_id, fingerprint, request_id, state, result, error,"
                " created, updated) VALUES (?, ?, ?, NULL, 'intent', NULL, NULL, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET model_id = excluded.model_id,"
                " fingerprint = excluded.fingerprint, request_id = NULL, state = 'intent',"
                " result = NULL, error = NULL, updated = excluded.updated",
                (key, model_id, text, now, now),
            )

        def take_back(connection: sqlite3.Connection) -> None:
            if not before:  # the intent itself was refused
                return
            if (
                connection.execute(
                    "SELECT 1 FROM jobs WHERE key = ? AND state = 'intent'", (key,)
                ).fetchone()
                is None
            ):
                return
            if before[0] is None:
                connection.execute("DELETE FROM jobs WHERE key = ?", (key,))
            else:
                connection.execute(
                    "UPDATE jobs SET model_id = ?, fingerprint = ?, request_id = ?, state = ?,"
                    " result = ?, error = ?, updated = ? WHERE key = ?",
                    (*before[0], key),
                )

        try:
            await self._ask(op)
        except asyncio.CancelledError:
            # Cancelled while waiting: the caller will not send the submit, so
            # an intent left behind would read as an uncertain job on resume.
            # Queued after the intent, the undo runs after it, in order.
            with contextlib.suppress(JournalError):
                self._ask(take_back)
            raise

    async def accepted(self, key: str, request_id: str) -> None:
        """Record that the server accepted *key*'s submit as *request_id*.

        A key without an intent (an engine that skipped it) is still recorded:
        the request id of a billed job is never dropped.
        """

        def op(connection: sqlite3.Connection) -> None:
            now = time.time()
            connection.execute(
                "INSERT INTO jobs (key, model_id, fingerprint, request_id, state, result, error,"
                " created, updated) VALUES (?, '', '{}', ?, 'accepted', NULL, NULL, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET request_id = excluded.request_id,"
                " state = 'accepted', error = NULL, updated = excluded.updated",
                (key, request_id, now, now),
            )

        await self._ask(op)

    async def state(self, key: str, state: str) -> None:
        """Record a state change seen by a poll (``accepted``, ``queued``, ``running``).

        A job that already ended keeps its ending (a late poll answer does not
        bring it back); an unknown key is ignored.
        """
        if state not in _PROGRESS:
            raise ValueError(f"state must be one of {sorted(_PROGRESS)}, not {state!r}")

        def op(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE jobs SET state = ?, updated = ? WHERE key = ?"
                " AND state IN ('intent', 'accepted', 'queued', 'running', 'running_on')",
                (state, time.time(), key),
            )

        await self._ask(op)

    async def finished(
        self,
        key: str,
        outcome: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Record how *key* ended (an outcome word; see :class:`JournalRecord`).

        An unknown key (a job that ended before its intent, so never paid for)
        leaves nothing to remember and is ignored.
        """
        # An Outcome enum (a str) is written as its plain word.
        outcome = str(getattr(outcome, "value", outcome))
        if outcome not in ENDINGS:
            raise ValueError(f"outcome must be one of {sorted(ENDINGS)}, not {outcome!r}")
        text = _dumps(result)

        def op(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, updated = ? WHERE key = ?",
                (outcome, text, error, time.time(), key),
            )

        await self._ask(op)

    async def unfinished(self) -> Sequence[JournalRecord]:
        """Return every job a resume must look at, in the order first written.

        Those whose submit may be in flight (``intent``), accepted and not
        seen ending (``accepted``, ``queued``, ``running``, ``running_on``),
        and those whose submit's answer was lost (``uncertain``): they stay
        here until a caller resubmits them or ends them otherwise.
        """
        marks = ", ".join("?" * len(_UNFINISHED))
        query = f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY rowid"  # noqa: S608

        def op(connection: sqlite3.Connection) -> list[JournalRecord]:
            return [_record(row) for row in connection.execute(query, _UNFINISHED)]

        return await self._ask(op)

    # -- beyond the protocol ----------------------------------------------------------

    async def records(self) -> list[JournalRecord]:
        """Return every job of the journal, in the order first written."""
        query = f"SELECT {_COLUMNS} FROM jobs ORDER BY rowid"  # noqa: S608 - constant columns

        def op(connection: sqlite3.Connection) -> list[JournalRecord]:
            return [_record(row) for row in connection.execute(query)]

        return await self._ask(op)

    async def counts(self) -> dict[str, int]:
        """Return how many jobs are in each state."""

        def op(connection: sqlite3.Connection) -> dict[str, int]:
            rows = connection.execute("SELECT state, count(*) FROM jobs GROUP BY state")
            return dict(rows)

        return await self._ask(op)

    async def load_models(self) -> dict[str, Any]:
        """Return the persisted run-time models: model key to its JSON."""

        def op(connection: sqlite3.Connection) -> dict[str, Any]:
            rows = connection.execute("SELECT key, value FROM models ORDER BY key")
            return {key: json.loads(value) for key, value in rows}

        return await self._ask(op)

    async def save_models(self, models: Mapping[str, Any]) -> None:
        """Store run-time models (model key to JSON), replacing those of the same keys."""
        rows = [(key, json.dumps(value, sort_keys=True)) for key, value in models.items()]

        def op(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "INSERT INTO models (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                rows,
            )

        await self._ask(op)

    @classmethod
    async def read(cls, path: str | os.PathLike[str]) -> list[JournalRecord]:
        """Read every job of the journal at *path*, without opening it for writing.

        For listing a journal (``runcomfy-async jobs``), also while a run
        writes it: WAL readers never wait for the writer, nor it for them.

        Raises:
            JournalError: There is no journal there, or it cannot be read.

        """
        target = Path(path)

        def read() -> list[JournalRecord]:
            if not target.is_file():
                raise JournalError(f"no journal at {target}")
            uri = f"{target.resolve().as_uri()}?mode=ro"
            try:
                with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
                    rows = connection.execute(
                        f"SELECT {_COLUMNS} FROM jobs ORDER BY rowid"  # noqa: S608
                    ).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"journal {target}: {exc}") from exc
            return [_record(row) for row in rows]

        return await asyncio.to_thread(read)
