"""The per-minute task statistics table (``djqueue_taskstat``)."""

from __future__ import annotations

import datetime

from django.db import models

#: Upper bounds (seconds) of the runtime histogram's buckets; a last bucket holds the rest.
RUNTIME_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)


def _bucket_name(bound: float | None) -> str:
    if bound is None:
        return "le_inf"
    return f"le_{bound * 1000:g}ms"


#: One column per bucket (``le_1ms`` … ``le_300000ms``, ``le_inf``): counts of that bucket alone
#: (not cumulative), so that ``SUM`` of a column over rows is the bucket of their union.
BUCKET_FIELDS: tuple[str, ...] = tuple(_bucket_name(b) for b in (*RUNTIME_BUCKETS, None))

#: ``minute`` of the rows that hold the totals of pruned minutes (``worker`` 0).
ROLLUP_MINUTE = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class TaskStat(models.Model):
    """What one worker process settled in one minute, per queue, task name and state.

    A worker writes only its own rows (``worker`` is its :class:`~djqueue.models.WorkerNode`
    id) and rewrites the row of a minute with that minute's running totals, so two workers never
    write the same row and a write never has to add to what is there. The rows of minutes older
    than the retention are folded into one row per queue, task name and state at
    :data:`ROLLUP_MINUTE` (worker 0), so totals since the start never go down.
    """

    minute = models.DateTimeField(help_text="Start of the minute (UTC), by the worker's clock.")
    worker = models.BigIntegerField(help_text="Id of the worker row that counted; 0 for totals.")
    queue = models.CharField(max_length=200)
    task_name = models.CharField("task name", max_length=255)
    state = models.CharField(max_length=50)
    count = models.PositiveBigIntegerField(default=0)
    runtime_sum = models.FloatField("runtime sum", default=0.0, help_text="Seconds, all counted.")

    class Meta:
        db_table = "djqueue_taskstat"
        verbose_name = "task statistic"
        constraints = [models.UniqueConstraint(
            fields=["minute", "worker", "queue", "task_name", "state"], name="djqueue_taskstat_key",
        )]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.queue} {self.task_name} {self.state}"


for _field in BUCKET_FIELDS:
    TaskStat.add_to_class(_field, models.PositiveBigIntegerField(default=0))
