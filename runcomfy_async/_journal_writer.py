"""The engine's journal writer: state changes and endings, written in order, once.

The intent and the acceptance of a paid submit are awaited where they happen
(the engine must not go on before they are written); everything after them
(state changes, endings) is queued here and written by one task, so a poll
never waits for the disk. :meth:`JournalWriter.flush` writes what is left at
close. A store that fails stops the writer and says so: the engine then sends
no more paid calls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from ._events import logger
from ._journal import Journal

__all__ = ["JournalWriter"]


class JournalWriter:
    """Writes queued journal calls in order, one at a time, from one task."""

    def __init__(self, journal: Journal, on_failure: Callable[[BaseException], None]) -> None:
        self._journal = journal
        self._on_failure = on_failure
        self._queue: deque[tuple[str, tuple[Any, ...], dict[str, Any]]] = deque()
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        state = "failed" if self.error is not None else "ok"
        return f"<JournalWriter queued={len(self._queue)} {state}>"

    def later(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Queue ``journal.method(*args, **kwargs)`` to be written in order."""
        self._queue.append((method, args, kwargs))
        self._wake.set()

    async def run(self) -> None:
        """Write whatever is queued, as it comes; never returns (cancel it)."""
        while True:
            await self.flush()
            self._wake = anyio.Event()
            if not self._queue:
                await self._wake.wait()

    async def flush(self) -> None:
        """Write everything queued now (the task's loop, or a last flush at close)."""
        # One writer at a time, so records go out in order and each once.
        async with self._lock:
            while self._queue and self.error is None:
                method, args, kwargs = self._queue.popleft()
                try:
                    with anyio.CancelScope(shield=True):
                        await getattr(self._journal, method)(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - any store failure must stop the sending
                    # A lost record is a lost billed job: fail loudly, send no more.
                    logger.exception("the journal failed; no more jobs are sent")
                    self.error = exc
                    self._on_failure(exc)
