"""The tables of flow control (see :mod:`djqueue.flow`). Imported by :mod:`djqueue.models`."""

from __future__ import annotations

from django.db import models


class FlowGate(models.Model):
    """One row per task name whose starts are limited across the cluster (a cluster-wide rate
    limit, a concurrency limit). Every admission of such a task locks this row in the worker's
    round, so admissions of one task are serialized; ``next_start`` is when the cluster-wide rate
    allows the next start (a token bucket of capacity one, as Celery's: starts are spaced
    ``1/rate`` apart on the database's clock)."""

    task_name = models.CharField("task name", max_length=255, unique=True)
    next_start = models.DateTimeField("next start", null=True, blank=True)

    class Meta:
        db_table = "djqueue_flow_gate"
        verbose_name = "flow gate"

    def __str__(self) -> str:
        return self.task_name


class UniqueTask(models.Model):
    """The message that holds a unique key of a task. The unique constraint makes racing
    producers enqueue one message; a row whose message no longer counts (it started, finished,
    or its time ran out, by ``mode``) is taken over by the next call."""

    class Mode(models.TextChoices):
        WAITING = "waiting", "while waiting"
        RUNNING = "running", "while waiting or running"
        PERIOD = "period", "for a period"

    task_name = models.CharField("task name", max_length=255)
    key = models.CharField(max_length=255)
    task_id = models.CharField("task id", max_length=255)
    mode = models.CharField(max_length=10, choices=Mode.choices)
    until = models.DateTimeField(null=True, blank=True, help_text="The end of a period's hold.")
    created_at = models.DateTimeField("created", auto_now_add=True)

    class Meta:
        db_table = "djqueue_unique_task"
        verbose_name = "unique task key"
        constraints = [models.UniqueConstraint(fields=["task_name", "key"],
                                               name="djqueue_unique_task_key")]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.key}] -> {self.task_id}"


class PausedQueue(models.Model):
    """A queue no worker claims from (``celery control pause_queue``); its messages wait."""

    queue = models.CharField(max_length=200, unique=True)
    paused_at = models.DateTimeField("paused", auto_now_add=True)

    class Meta:
        db_table = "djqueue_paused_queue"
        verbose_name = "paused queue"

    def __str__(self) -> str:
        return self.queue
