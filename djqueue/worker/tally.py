"""A worker's count of the tasks it settled: kept in memory, written with its heartbeat.

Counting adds nothing the round waits for: :meth:`Tally.add` updates a dict (about a microsecond
per outcome, under a lock the heartbeat thread takes for as long as it copies the dict). The
heartbeat thread writes the minutes that changed in one upsert (:func:`djqueue.stats.store.save`)
and, every few minutes, prunes: statistics older than ``DJQUEUE_STATS_RETENTION`` are folded into
totals, and workers whose last heartbeat is older than ``DJQUEUE_WORKER_FORGET_AFTER`` are
deleted. A worker killed without warning loses what it counted since its last beat (at most
``DJQUEUE_WORKER_LOST_TIMEOUT / 6`` seconds, 5 by default); a clean shutdown writes everything.
While the database is away the counts wait in memory, up to half the retention.
"""

from __future__ import annotations

import bisect
import datetime
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


class Tally:
    """Per-minute counts of one worker process."""

    def __init__(self, retention: float, forget_after: float | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.retention = float(retention)
        self.forget_after = forget_after
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[_Key, list[float]] = {}
        self._dirty: set[_Key] = set()
        self._minute = 0  # never goes back, so a written minute is never counted afresh
        self._next_prune = 0.0  # the first beat prunes: what a stopped installation left

    def add(self, outcomes: Sequence[Outcome]) -> None:
        """Count settled outcomes in the current minute, by queue, task name and state."""
        if not outcomes:
            return
        with self._lock:
            self._minute = minute = max(self._minute, int(self._clock() // 60))
            for outcome in outcomes:
                if outcome.action in GIVEN_BACK:
                    continue
                job = outcome.job
                key = (minute, job.queue, job.task_name, outcome.state)
                counts = self._counts.get(key)
                if counts is None:
                    counts = self._counts[key] = [0] * (3 + len(RUNTIME_BUCKETS))
                runtime = outcome.runtime
                counts[0] += 1
                counts[1] += runtime
                counts[2 + bisect.bisect_left(RUNTIME_BUCKETS, runtime)] += 1
                self._dirty.add(key)

    def flush(self, using: str, worker: int) -> None:
        """Write the minutes that changed since the last flush (one statement); forget the
        minutes that are over once written. On a database error everything is kept for the next
        flush, and the error raised."""
        with self._lock:
            self._minute = current = max(self._minute, int(self._clock() // 60))
            stale = [key for key in self._counts if key[0] < current - self.retention / 120]
            if stale:
                logger.warning("Dropping %d task statistics older than half of "
                               "DJQUEUE_STATS_RETENTION that could not be written.", len(stale))
            for key in stale:
                del self._counts[key]
            self._dirty.difference_update(stale)
            changed = {key: list(self._counts[key]) for key in self._dirty}
            over = {key: self._counts.pop(key) for key in list(self._counts) if key[0] < current}
            self._dirty = set()
        try:
            store.save(using, worker, {(_when(m), q, t, s): counts
                                       for (m, q, t, s), counts in changed.items()})
        except BaseException:
            with self._lock:
                for key, counts in over.items():
                    self._counts.setdefault(key, counts)
                self._dirty.update(changed)
            raise

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
