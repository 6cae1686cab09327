"""Writes to the statistics table: a worker's counts, and the pruning of old rows.

Every statement is Django's ORM (an upsert through ``bulk_create(update_conflicts=True)``), the
same on every database vendor.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence

from django.db import connections, transaction
from django.db.models import F, Sum
from django.db.models.functions import Now

from ..models import WorkerNode
from .models import BUCKET_FIELDS, ROLLUP_MINUTE, TaskStat

logger = logging.getLogger("djqueue.stats")

#: (minute, queue, task name, state)
Key = tuple[datetime.datetime, str, str, str]
#: ``[count, runtime sum, bucket 0, bucket 1, …]`` (see ``BUCKET_FIELDS``)
Counts = Sequence[float]

KEY_FIELDS = ["minute", "worker", "queue", "task_name", "state"]
VALUE_FIELDS = ["count", "runtime_sum", *BUCKET_FIELDS]
#: Rows folded into totals per transaction.
ROLLUP_BATCH = 5000


def save(using: str, worker: int, counts: Mapping[Key, Counts]) -> None:
    """Write ``counts`` (a minute's running totals for ``worker``) over what the rows held: one
    statement, which inserts the new rows and rewrites the others."""
    if not counts:
        return
    rows = [TaskStat(minute=minute, worker=worker, queue=queue, task_name=task_name, state=state,
                     **dict(zip(VALUE_FIELDS, values)))
            for (minute, queue, task_name, state), values in counts.items()]
    # MySQL's upsert takes no conflict target: any unique key conflicts, which is this one.
    target = KEY_FIELDS if connections[using].features.supports_update_conflicts_with_target else None
    TaskStat.objects.using(using).bulk_create(
        rows, update_conflicts=True, unique_fields=target, update_fields=VALUE_FIELDS)


def rollup(using: str, before: datetime.datetime) -> int:
    """Fold the rows of minutes before ``before`` into the totals rows; returns how many rows
    were folded. Each batch is one transaction that locks the rows it folds, so two workers
    pruning at once never fold a row twice."""
    folded = 0
    while True:
        with transaction.atomic(using=using):
            stale = TaskStat.objects.using(using).filter(minute__gt=ROLLUP_MINUTE, minute__lt=before)
            ids = list(stale.select_for_update().order_by("id").values_list("id", flat=True)
                       [:ROLLUP_BATCH])
            if not ids:
                return folded
            rows = TaskStat.objects.using(using).filter(id__in=ids)
            groups = list(rows.values("queue", "task_name", "state").order_by()
                          .annotate(**{f"total_{name}": Sum(name) for name in VALUE_FIELDS}))
            totals = TaskStat.objects.using(using).filter(minute=ROLLUP_MINUTE, worker=0)
            TaskStat.objects.using(using).bulk_create([TaskStat(minute=ROLLUP_MINUTE, worker=0, queue=g["queue"],
                                         task_name=g["task_name"], state=g["state"])
                                for g in groups], ignore_conflicts=True)
            for g in groups:
                totals.filter(queue=g["queue"], task_name=g["task_name"], state=g["state"]).update(
                    **{name: F(name) + g[f"total_{name}"] for name in VALUE_FIELDS})
            rows.delete()
        folded += len(ids)
        if len(ids) < ROLLUP_BATCH:
            return folded


def forget_workers(using: str, after: float) -> int:
    """Delete the rows of workers whose last heartbeat is more than ``after`` seconds old
    (stopped or lost long ago: they leave the admin's Workers list); returns how many."""
    old = Now() - datetime.timedelta(seconds=after)
    deleted, _ = WorkerNode.objects.using(using).filter(heartbeat_at__lt=old).delete()
    return deleted
