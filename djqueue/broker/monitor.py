"""Read-only figures for the admin's overview and the command line, cheap on big tables.

Nothing here counts a whole table: counts stop at :data:`COUNT_CAP` (shown as "10000+"), the list of
queues comes from loose index scans (one index probe per distinct queue), and every query is
answered by one of the message table's partial indexes (waiting, held, rejected: see
:class:`~djqueue.models.Message`), which a claim does not have to update.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.db import connections, models
from django.db.models import Count
from django.utils import timezone

from ..models import Message, TaskResult, WorkerNode

COUNT_CAP = 10_000
#: Distinct values listed at most (queue names, task names).
DISTINCT_LIMIT = 500


def capped_count(queryset: models.QuerySet) -> int:
    """``min(count, COUNT_CAP + 1)``: a count that reads at most ``COUNT_CAP + 1`` index entries."""
    return queryset[: COUNT_CAP + 1].count()


def distinct_values(
    model: type[models.Model], column: str, using: str = "default", where: str = ""
) -> list[str]:
    """Distinct non-empty values of an indexed ``column``, one index probe each (loose index scan).

    ``SELECT DISTINCT`` would read every row; this asks the index for the smallest value greater
    than the previous one, which PostgreSQL and SQLite both answer from the index. ``where`` (SQL
    on the table's columns) restricts the rows, and so selects a partial index with that condition.
    """
    table = connections[using].ops.quote_name(model._meta.db_table)
    col = connections[using].ops.quote_name(model._meta.get_field(column).column)
    condition = f" AND {where}" if where else ""
    sql = (
        f"WITH RECURSIVE v(name) AS ("
        f" SELECT MIN({col}) FROM {table} WHERE TRUE{condition}"
        f" UNION ALL"
        f" SELECT (SELECT MIN({col}) FROM {table} WHERE {col} > v.name{condition})"
        f" FROM v WHERE v.name IS NOT NULL"
        f") SELECT name FROM v WHERE name IS NOT NULL AND name <> '' LIMIT %s"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [DISTINCT_LIMIT])
        return [row[0] for row in cursor.fetchall()]


def queue_names(using: str = "default") -> list[str]:
    """Every queue that has messages (of any state), each state's from its partial index (held
    messages are few, so a probe reads that whole small index)."""
    names = set()
    for where in ("state = 'ready'", "state = 'rejected'", "state IN ('reserved', 'started')"):
        names.update(distinct_values(Message, "queue", using, where))
    return sorted(names)[:DISTINCT_LIMIT]


@dataclass
class QueueFigures:
    name: str
    waiting: int = 0
    scheduled: int = 0
    reserved: int = 0
    running: int = 0
    rejected: int = 0
    oldest_waiting_since: datetime.datetime | None = None
    workers: list[str] = field(default_factory=list)

    @property
    def oldest_waiting(self) -> datetime.timedelta | None:
        """How long the oldest waiting message has been ready to run."""
        return timezone.now() - self.oldest_waiting_since if self.oldest_waiting_since else None

    @property
    def counts(self) -> tuple[int, int, int, int, int]:
        return (self.waiting, self.scheduled, self.reserved, self.running, self.rejected)


def live_workers(using: str, lost_after: float) -> list[WorkerNode]:
    since = timezone.now() - datetime.timedelta(seconds=lost_after)
    return list(WorkerNode.objects.using(using)
                .filter(stopped_at=None, lost_at=None, heartbeat_at__gte=since)
                .order_by("hostname", "pid"))


def queue_figures(using: str, lost_after: float, default_queue: str) -> list[QueueFigures]:
    """Per queue (those with messages, the default one and those live workers consume)."""
    now = timezone.now()
    workers = live_workers(using, lost_after)
    consumers: dict[str, list[str]] = {}
    for node in workers:
        for queue in filter(None, node.queues.split(",")):
            consumers.setdefault(queue, []).append(node.hostname)
    names = sorted({default_queue, *queue_names(using), *consumers})
    messages = Message.objects.using(using)
    figures = []
    for name in names:
        in_queue = messages.filter(queue=name)
        ready = in_queue.filter(state=Message.State.READY)
        oldest = (ready.filter(available_at__lte=now).order_by("available_at")
                  .values_list("available_at", flat=True).first())
        figures.append(QueueFigures(
            name=name,
            waiting=capped_count(ready.filter(available_at__lte=now)),
            scheduled=capped_count(ready.filter(available_at__gt=now)),
            reserved=capped_count(in_queue.filter(state=Message.State.RESERVED)),
            running=capped_count(in_queue.filter(state=Message.State.STARTED)),
            rejected=capped_count(in_queue.filter(state=Message.State.REJECTED)),
            oldest_waiting_since=oldest,
            workers=sorted(set(consumers.get(name, []))),
        ))
    return figures


def recent_outcomes(using: str, minutes: int) -> list[tuple[str, dict[str, int]]]:
    """Results finished in the last ``minutes``, by state: one row per queue, then ``all queues``
    (uses the ``date_done`` index)."""
    since = timezone.now() - datetime.timedelta(minutes=minutes)
    rows = (TaskResult.objects.using(using).filter(date_done__gte=since)
            .values("queue", "state").annotate(n=Count("id")).order_by("queue", "state"))
    by_queue: dict[str, dict[str, int]] = {}
    total: dict[str, int] = {}
    for row in rows:
        for counts in (by_queue.setdefault(row["queue"] or "(unknown)", {}), total):
            state = row["state"] if row["state"] in {"SUCCESS", "FAILURE"} else "other"
            counts[state] = counts.get(state, 0) + row["n"]
    return [*sorted(by_queue.items()), ("all queues", total)]
