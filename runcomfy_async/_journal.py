"""The journal seam: what the engine writes down before and after a paid call.

RunComfy has no idempotency key, so the only way a batch can survive its own
process (kill -9, OOM, a closed laptop) without paying twice is to write down
each paid call's *intent* before it leaves and its request id the moment it
is accepted. The engine awaits a :class:`Journal` at exactly those points, and
at every state change and ending; a journal that fails raises, and the job
fails with it (never swallowed: a lost record is a lost billed job).

:class:`NullJournal` (the default) remembers nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

__all__ = ["Journal", "JournalRecord", "NullJournal"]


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

    """

    key: str
    model_id: str
    fingerprint: Mapping[str, Any] = attrs.field(factory=dict)
    request_id: str | None = None
    state: str = "intent"
    result: Mapping[str, Any] | None = None
    error: str | None = None


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
