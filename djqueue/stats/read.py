"""Reads of the statistics table for the admin's chart and the Prometheus metrics.

The chart reads the last hour's rows by the ``minute`` that leads the table's unique index; the
totals group the whole table, which stays small: one row per worker process, minute, queue, task
name and state for ``DJQUEUE_STATS_RETENTION`` (two hours by default), and one totals row per
queue, task name and state for everything older.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.db.models import Sum
from django.utils import timezone

from .. import states
from .models import BUCKET_FIELDS, TaskStat

#: Outcomes of tasks that ran: their runtimes make the histogram (a revoked task's 0 would not).
RAN = (states.SUCCESS, states.FAILURE, states.RETRY)


@dataclass
class QueueSeries:
    """Succeeded and failed tasks of one queue, one number per minute, oldest first."""

    queue: str
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    @property
    def total(self) -> tuple[int, int]:
        return sum(self.succeeded), sum(self.failed)


def this_minute(now: datetime.datetime | None = None) -> datetime.datetime:
    return (now or timezone.now()).replace(second=0, microsecond=0)


def minute_series(using: str, minutes: int = 60,
                  now: datetime.datetime | None = None) -> tuple[datetime.datetime, list[QueueSeries]]:
    """The first minute shown and, per queue with tasks in the last ``minutes`` minutes (the
    current one included), its series."""
    first = this_minute(now) - datetime.timedelta(minutes=minutes - 1)
    rows = (TaskStat.objects.using(using)
            .filter(minute__gte=first, state__in=(states.SUCCESS, states.FAILURE))
            .values("queue", "minute", "state").order_by().annotate(n=Sum("count")))
    series: dict[str, QueueSeries] = {}
    for row in rows:
        index = int((row["minute"] - first).total_seconds() // 60)
        if not 0 <= index < minutes:
            continue  # a worker whose clock is ahead
        line = series.get(row["queue"])
        if line is None:
            line = series[row["queue"]] = QueueSeries(row["queue"], [0] * minutes, [0] * minutes)
        # int(): SUM of an integer column is a Decimal on some databases (MySQL).
        (line.succeeded if row["state"] == states.SUCCESS else line.failed)[index] += int(row["n"])
    return first, [series[name] for name in sorted(series)]


@dataclass
class TaskTotals:
    """Everything counted of one task name in one queue and state, since the table began."""

    queue: str
    task_name: str
    state: str
    count: int
    runtime_sum: float
    buckets: list[int]  # per bucket of RUNTIME_BUCKETS, then the rest (not cumulative)


def task_totals(using: str) -> list[TaskTotals]:
    """Totals per queue, task name and state: the minutes still kept plus the folded totals."""
    rows = (TaskStat.objects.using(using).values("queue", "task_name", "state").order_by()
            .annotate(n=Sum("count"), seconds=Sum("runtime_sum"),
                      **{f"sum_{name}": Sum(name) for name in BUCKET_FIELDS}))
    return [TaskTotals(row["queue"], row["task_name"], row["state"], int(row["n"] or 0),
                       float(row["seconds"] or 0.0),
                       [int(row[f"sum_{name}"] or 0) for name in BUCKET_FIELDS])
            for row in sorted(rows, key=lambda r: (r["queue"], r["task_name"], r["state"]))]
