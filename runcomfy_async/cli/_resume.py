"""Resuming a batch: the journal beside the results, and the results file taken up again.

``run --batch FILE --output OUT`` keeps its journal in ``OUT.journal``, so
running the same command again resumes the batch. Two records meet here:

- the **results file** says which jobs are settled: a job whose line is in
  it is not run again, and its line is not written again;
- the **journal** says what became of the others: the library follows an
  accepted job by its request id, gives back a finished one's outcome, and
  ends an uncertain one (its submit's answer was lost) without sending it.

The results file is only ever appended to, so nothing written before a
crash is lost, with two repairs when a run takes it up again:

- a last line without its newline (cut off by a crash mid-write) is
  removed: its job gets its line again from the journal;
- the lines of jobs this run settles again are taken out: jobs left on the
  server when a run quit (``running``, ``queued``; the journal has their
  request ids), jobs never sent (``billed: false`` and no request id: an
  interrupted run's unsent jobs), and, with ``--resubmit-uncertain``, the
  ``uncertain`` ones. The file is then written anew beside itself and
  renamed into place, so a crash at any moment leaves one whole file, old
  or new.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from runcomfy_async import JournalRecord, ValidationError

from ._base import UsageError, plural
from ._batch import Images, JobSpec
from ._results import Record

JOURNAL_SUFFIX: Final = ".journal"
LEFT_ON_SERVER: Final = frozenset({"running", "queued"})
MAX_NAMED: Final = 50
"""Keys named one by one in a message; the rest are counted."""


def default_journal(output: Path) -> Path:
    """Return the journal kept beside the results file *output* (``OUT.journal``)."""
    return output.with_name(output.name + JOURNAL_SUFFIX)


@attrs.frozen(kw_only=True)
class Prior:
    """What the results file held when a run took it up again.

    Attributes:
        kept: The lines that stay, by key: their jobs are settled.
        redone: The lines taken out: this run settles their jobs again.
        cut: The bytes of a partial last line that were removed.

    """

    kept: Mapping[str, Record] = attrs.field(factory=dict)
    redone: tuple[Record, ...] = ()
    cut: int = 0


def settles_again(
    record: Record, known: Mapping[str, JournalRecord], *, resubmit_uncertain: bool
) -> bool:
    """Say whether a resumed run settles *record*'s job again (and replaces its line)."""
    if record.status in LEFT_ON_SERVER:
        # Followed again only through the journal's request id: without it, a
        # new submit would pay a second time for a job that runs.
        entry = known.get(record.key)
        return (
            entry is not None
            and record.request_id is not None
            and entry.request_id == record.request_id
        )
    if record.request_id is None and record.billed is False:
        return True  # never sent, so never paid: send it now
    return record.status == "uncertain" and resubmit_uncertain


def take_up(
    path: Path,
    specs: Iterable[JobSpec],
    known: Mapping[str, JournalRecord],
    *,
    resubmit_uncertain: bool,
) -> Prior:
    """Read the results file *path* of an earlier run of this batch and repair it.

    Raises:
        UsageError: The file is not this command's, or holds another batch's
            results (a key not in this batch, or a key twice).

    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Prior()
    except OSError as exc:
        raise UsageError(f"--output: cannot read {path}: {exc.strerror or exc}") from exc
    whole = raw[: raw.rfind(b"\n") + 1]
    cut = len(raw) - len(whole)
    keys = {spec.key for spec in specs}
    records: list[tuple[bytes, Record]] = []
    seen: set[str] = set()
    for number, text in enumerate(whole.splitlines(keepends=True), start=1):
        if not text.strip():
            continue
        where = f"--output {path}:{number}"
        record = _parse(text, where)
        if record.key not in keys:
            raise UsageError(
                f"{where}: a result for {record.key!r}, which is not in this batch: the file "
                "holds another batch's results; give another --output (or move it away)"
            )
        if record.key in seen:
            raise UsageError(f"{where}: a second result for {record.key!r}; this file is not ours")
        seen.add(record.key)
        records.append((text, record))
    kept = {
        r.key: r
        for _, r in records
        if not settles_again(r, known, resubmit_uncertain=resubmit_uncertain)
    }
    redone = tuple(r for _, r in records if r.key not in kept)
    if redone:
        _replace(path, b"".join(text for text, r in records if r.key in kept))
    elif cut:
        os.truncate(path, len(whole))
    return Prior(kept=kept, redone=redone, cut=cut)


def _parse(text: bytes, where: str) -> Record:
    problem: Exception
    try:
        data: Any = json.loads(text)
        if isinstance(data, dict):
            return Record.from_json(data)
        problem = TypeError(f"a JSON {type(data).__name__}, not an object")
    except KeyError as exc:
        problem = ValueError(f"no {exc.args[0]!r} field")
    except (ValueError, TypeError) as exc:
        problem = exc
    raise UsageError(
        f"{where}: not a result line of this command ({problem}); give another --output "
        "(or move the file away)"
    )


def _replace(path: Path, content: bytes) -> None:
    """Write *content* beside *path*, on disk, then rename it into place."""
    fresh = path.with_name(path.name + ".tmp")
    with fresh.open("wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())
    fresh.replace(path)


def same_batch(specs: Iterable[JobSpec], known: Mapping[str, JournalRecord]) -> list[str]:
    """Return a message for each job whose key the journal records with other content.

    A key names one job across runs; if the line behind it changed (another
    prompt, seed, frames or image), the journal's outcome is not this line's.
    Images compare by content (SHA-256) or URL, not by path, so a batch
    folder may move.
    """
    images = Images()
    problems: list[str] = []
    for spec in specs:
        entry = known.get(spec.key)
        if entry is None or not entry.fingerprint:
            continue
        try:
            request = images.request(spec)
        except (OSError, ValidationError):
            continue  # the file's own error comes when its job is sent
        if _comparable(request.fingerprint()) != _comparable(entry.fingerprint):
            problems.append(
                f"{spec.where}: key {spec.key!r} names another job in the journal "
                f"(request {entry.request_id or 'never accepted'}, {entry.state})"
            )
    return problems


def _comparable(fingerprint: Mapping[str, Any]) -> Any:
    # Round-tripped through JSON as the journal stores it; a file by content.
    plain = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    image = plain.get("image")
    if isinstance(image, dict):
        image.pop("path", None)
    return plain


def named(keys: Iterable[str]) -> list[str]:
    """Return ``keys`` one a line, the first MAX_NAMED, then a count of the rest."""
    keys = list(keys)
    lines = [f"  {key}" for key in keys[:MAX_NAMED]]
    if len(keys) > MAX_NAMED:
        lines.append(f"  ... and {plural(len(keys) - MAX_NAMED, 'more job')}")
    return lines
