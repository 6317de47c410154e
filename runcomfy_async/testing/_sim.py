"""The job simulation: queues, slots and run times, advanced lazily.

No job owns a timer. Each request first advances the simulation to the
emulator clock: a heap holds running jobs by finish time, and when one
finishes the next queued job of its account starts at exactly that moment.
So 10,000 jobs in flight cost memory, not tasks, and a ``ManualClock`` moves
them all deterministically.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._config import Outcome

JobState: TypeAlias = Literal["in_queue", "in_progress", "succeeded", "failed", "cancelled"]
STATES: Final[tuple[JobState, ...]] = (
    "in_queue",
    "in_progress",
    "succeeded",
    "failed",
    "cancelled",
)


@attrs.define(eq=False)
class Job:
    """One job's whole life; mutated only by :class:`Simulation`."""

    request_id: str
    model_id: str
    payload: dict[str, object]
    token: str
    created: float
    duration: float  # on the emulator clock: nominal run time x time_scale
    nominal_run_time: float
    outcome: Outcome
    error: object
    cost: float
    state: JobState = "in_queue"
    started: float | None = None
    finished: float | None = None
    qseq: int = -1  # place in its account's queue; -1 = never queued
    key: str = ""  # submit_key(model_id, payload)
    submit_fault: str | None = None  # what struck the submit's answer after acceptance


class _Fenwick:
    """Counts marked positions below an index in O(log n); grows on demand."""

    __slots__ = ("_marks", "_tree")

    def __init__(self) -> None:
        self._marks = bytearray(64)
        self._tree = [0] * 65

    def mark(self, index: int) -> None:
        if index >= len(self._marks):
            self._grow(index)
        self._marks[index] = 1
        tree, i = self._tree, index + 1
        while i < len(tree):
            tree[i] += 1
            i += i & -i

    def below(self, index: int) -> int:
        tree, i, total = self._tree, min(index, len(self._marks)), 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def _grow(self, index: int) -> None:
        size = len(self._marks)
        while size <= index:
            size *= 2
        self._marks.extend(bytes(size - len(self._marks)))
        # Rebuild in O(n): amortised O(1) per mark, as sizes double.
        tree = [0, *self._marks]
        for i in range(1, size + 1):
            parent = i + (i & -i)
            if parent <= size:
                tree[parent] += tree[i]
        self._tree = tree


@attrs.define
class _Account:
    slots: int | None
    running: int = 0
    waiting: int = 0
    queue: deque[Job] = attrs.Factory(deque)
    head: int = 0  # qseq of queue[0]: entries below it have left the queue
    next_qseq: int = 0
    cancelled: _Fenwick = attrs.Factory(_Fenwick)


@attrs.define
class Simulation:
    """All jobs of all accounts, and the event heap that moves them."""

    slots: int | None
    jobs: dict[str, Job] = attrs.Factory(dict)
    counts: dict[JobState, int] = attrs.Factory(lambda: dict.fromkeys(STATES, 0))
    now: float = float("-inf")
    _accounts: dict[str, _Account] = attrs.Factory(dict)
    _heap: list[tuple[float, int, Job]] = attrs.Factory(list)
    _tiebreak: int = 0

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs.values())

    def add(self, job: Job) -> None:
        """Take a new job at ``job.created``: start it or queue it."""
        self.advance(job.created)
        self.jobs[job.request_id] = job
        account = self._accounts.get(job.token)
        if account is None:
            account = self._accounts[job.token] = _Account(self.slots)
        self.counts["in_queue"] += 1
        # After advancing, a free slot means nobody is waiting.
        if account.slots is None or account.running < account.slots:
            self._start(account, job, job.created)
        else:
            job.qseq = account.next_qseq
            account.next_qseq += 1
            account.queue.append(job)
            account.waiting += 1

    def advance(self, now: float) -> None:
        """Finish every job due by ``now``, starting queued ones in their slots."""
        self.now = max(self.now, now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, job = heapq.heappop(heap)
            job.finished = at
            self._move(job, job.outcome)
            account = self._accounts[job.token]
            account.running -= 1
            queue = account.queue
            while queue:
                nxt = queue.popleft()
                account.head += 1
                if nxt.state == "in_queue":
                    account.waiting -= 1
                    self._start(account, nxt, at)
                    break

    def cancel(self, job: Job, now: float) -> bool:
        """Cancel a queued job; False (and no change) if it is not queued."""
        self.advance(now)
        if job.state != "in_queue":
            return False
        account = self._accounts[job.token]
        account.cancelled.mark(job.qseq)
        account.waiting -= 1
        job.finished = now
        self._move(job, "cancelled")
        return True

    def queue_position(self, job: Job) -> int | None:
        """Jobs of the same account ahead of a queued job (0 = next to start)."""
        if job.state != "in_queue":
            return None
        account = self._accounts[job.token]
        ahead = job.qseq - account.head
        return ahead - (account.cancelled.below(job.qseq) - account.cancelled.below(account.head))

    def running(self) -> int:
        """How many jobs are in progress."""
        return self.counts["in_progress"]

    def _start(self, account: _Account, job: Job, at: float) -> None:
        account.running += 1
        job.started = at
        self._move(job, "in_progress")
        self._tiebreak += 1
        heapq.heappush(self._heap, (at + job.duration, self._tiebreak, job))

    def _move(self, job: Job, state: JobState) -> None:
        self.counts[job.state] -= 1
        self.counts[state] += 1
        job.state = state
