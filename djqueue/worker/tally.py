"""A worker's count of the tasks it settled: kept in memory, written with its heartbeat.

Counting adds nothing the round waits for: :meth:`Tally.add` (the worker's main thread) only
notes each outcome's queue, task name, state and runtime, a fraction of a microsecond each. The
heartbeat thread sums them per minute, writes the minutes that changed in one upsert
(:func:`djqueue.stats.store.save`) and, every few minutes, prunes: statistics older than
``DJQUEUE_STATS_RETENTION`` are folded into totals, and workers whose last heartbeat is older than
``DJQUEUE_WORKER_FORGET_AFTER`` are deleted. A worker killed without warning loses what it counted
since its last beat (at most ``DJQUEUE_WORKER_LOST_TIMEOUT / 6`` seconds, 5 by default); a clean
shutdown writes everything. While the database is away the counts wait in memory, up to half the
retention.
"""

from __future__ import annotations

import bisect
import collections
import datetime
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from django.db import DatabaseError

from ..stats import store
from ..stats.models import RUNTIME_BUCKETS
from .execution import Outcome

logger = logging.getLogger("djqueue.stats")

#: Seconds between a worker's prunings (with jitter, so workers started together drift apart).
PRUNE_INTERVAL = 300.0
#: Outcomes of messages given back to the queue: the task did not finish.
GIVEN_BACK = frozenset({"requeue", "release"})

_Key = tuple[int, str, str, str]  # minute (since the epoch), queue, task name, state
_Noted = dict[tuple[str, str, str], list[float]]  # (queue, task name, state) -> runtimes
_bucket_of = functools.partial(bisect.bisect_left, RUNTIME_BUCKETS)


class Tally:
    """Per-minute counts of one worker process."""

    def __init__(self, retention: float, forget_after: float | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.retention = float(retention)
        self.forget_after = forget_after
        self._clock = clock
        self._lock = threading.Lock()  # guards _noted and _minute
        self._noted: list[tuple[int, _Noted]] = []
        self._minute = 0  # never goes back: a minute once over gets no more counts
        # What flush() keeps (one flush at a time: a heartbeat thread that outlived its join
        # may still be flushing when the stopping worker flushes): running totals of the
        # minutes not yet over and written.
        self._flushing = threading.Lock()
        self._counts: dict[_Key, list[float]] = {}
        self._dirty: set[_Key] = set()
        self._next_prune = 0.0  # the first beat prunes: what a stopped installation left

    def add(self, outcomes: Sequence[Outcome]) -> None:
        """Note settled outcomes in the current minute (summed at the next flush)."""
        if not outcomes:
            return
        noted: _Noted = {}
        for outcome in outcomes:
            if outcome.action not in GIVEN_BACK:
                job = outcome.job
                noted.setdefault((job.queue, job.task_name, outcome.state), []).append(
                    outcome.runtime)
        with self._lock:
            self._minute = max(self._minute, int(self._clock() // 60))
            self._noted.append((self._minute, noted))

    def _sum_noted(self) -> int:
        """Sum what was noted into the running totals; returns the current minute (every later
        note is of this minute or a later one)."""
        with self._lock:
            noted, self._noted = self._noted, []
            self._minute = current = max(self._minute, int(self._clock() // 60))
        counts, size = self._counts, 3 + len(RUNTIME_BUCKETS)
        for minute, by_key in noted:
            for (queue, task_name, state), runtimes in by_key.items():
                key = (minute, queue, task_name, state)
                totals = counts.get(key)
                if totals is None:
                    totals = counts[key] = [0] * size
                totals[0] += len(runtimes)
                totals[1] += sum(runtimes)
                for bucket, count in collections.Counter(map(_bucket_of, runtimes)).items():
                    totals[2 + bucket] += count
                self._dirty.add(key)
        return current

    def flush(self, using: str, worker: int) -> None:
        """Write the minutes that changed since the last flush (one statement); forget the
        minutes that are over once written. On a database error everything is kept for the next
        flush, and the error raised."""
        with self._flushing:
            self._flush(using, worker)

    def _flush(self, using: str, worker: int) -> None:
        current = self._sum_noted()
        stale = [key for key in self._counts if key[0] < current - self.retention / 120]
        if stale:
            logger.warning("Dropping %d task statistics older than half of "
                           "DJQUEUE_STATS_RETENTION that could not be written.", len(stale))
            for key in stale:
                del self._counts[key]
            self._dirty.difference_update(stale)
        store.save(using, worker, {(_when(m), q, t, s): self._counts[m, q, t, s]
                                   for (m, q, t, s) in self._dirty})
        self._dirty = set()
        for key in [key for key in self._counts if key[0] < current]:
            del self._counts[key]

    def beat(self, using: str, worker: int) -> None:
        """The heartbeat's part: flush, and prune when due."""
        self.flush(using, worker)
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_INTERVAL * random.uniform(0.5, 1.0)
        try:
            folded = store.rollup(using, _when(int(self._clock() - self.retention) // 60))
            forgotten = store.forget_workers(using, self.forget_after) if self.forget_after else 0
        except DatabaseError as exc:  # another worker pruning at the same time, on SQLite
            logger.warning("Could not prune task statistics and old worker rows (%s); "
                           "will try again.", str(exc).strip())
            return
        if folded or forgotten:
            logger.info("Pruned %d task statistics and %d old worker row(s).", folded, forgotten)


def _when(minute: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(minute * 60, datetime.timezone.utc)
