"""The message table (the broker) and the result table."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from . import states


class Message(models.Model):
    """One task message. Rows leave this table when their task finishes, so it stays small."""

    class State(models.TextChoices):
        READY = "ready", "ready"
        RESERVED = "reserved", "reserved"
        STARTED = "started", "started"
        REJECTED = "rejected", "rejected"

    id = models.BigAutoField(primary_key=True)
    task_id = models.CharField("task id", max_length=255)
    task_name = models.CharField("task name", max_length=255)
    queue = models.CharField(max_length=200, default="celery")
    priority = models.PositiveSmallIntegerField(
        default=0, help_text="0–255; higher numbers run first."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.READY)
    available_at = models.DateTimeField(
        "available at", help_text="Not claimed before this time (countdown/eta)."
    )
    expires = models.DateTimeField(
        null=True, blank=True, help_text="Never run after this time; marked REVOKED instead."
    )
    content_type = models.CharField("content type", max_length=64, default="application/json")
    body = models.TextField(help_text="Encoded arguments and call options.")
    retries = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField("created at", auto_now_add=True)
    worker = models.CharField(
        max_length=255, blank=True, default="", help_text="Node name of the worker holding it."
    )
    lease_until = models.DateTimeField(
        "lease until", null=True, blank=True, help_text="When a reserving worker's hold expires."
    )
    error = models.TextField(
        blank=True, default="", help_text="Why a rejected message was set aside."
    )

    class Meta:
        db_table = "djqueue_message"
        verbose_name = "message"
        indexes = [
            models.Index(
                fields=["queue", "-priority", "id"],
                condition=Q(state="ready"),
                name="djqueue_msg_ready",
            ),
            # Only for idle workers asking when the next delayed message is due.
            models.Index(
                fields=["queue", "available_at"],
                condition=Q(state="ready"),
                name="djqueue_msg_due",
            ),
            models.Index(fields=["worker", "state"], name="djqueue_msg_worker"),
            # Plain indexes: db_index=True would add a second, LIKE-only index on PostgreSQL
            # that every insert pays for and no query uses.
            models.Index(fields=["task_id"], name="djqueue_msg_task_id"),
            models.Index(fields=["task_name"], name="djqueue_msg_task_name"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}]"


class TaskResult(models.Model):
    """The state and outcome of one task (``CELERY_RESULT_BACKEND = "database"``)."""

    task_id = models.CharField("task id", max_length=255, unique=True)
    task_name = models.CharField("task name", max_length=255, blank=True, default="", db_index=True)
    state = models.CharField(
        max_length=50,
        default=states.PENDING,
        choices=[(s, s) for s in sorted(states.ALL_STATES)],
        db_index=True,
    )
    content_type = models.CharField("content type", max_length=64, default="application/json")
    result = models.TextField(
        null=True, blank=True, help_text="Encoded return value, or the exception for failures."
    )
    traceback = models.TextField(null=True, blank=True)
    args = models.TextField(blank=True, default="", help_text="repr() of the positional arguments.")
    kwargs = models.TextField(blank=True, default="", help_text="repr() of the keyword arguments.")
    worker = models.CharField(max_length=255, blank=True, default="")
    runtime = models.FloatField(null=True, blank=True, help_text="Seconds the task ran.")
    date_created = models.DateTimeField("created", auto_now_add=True)
    date_done = models.DateTimeField("done", null=True, blank=True, db_index=True)

    class Meta:
        db_table = "djqueue_taskresult"
        verbose_name = "task result"

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] {self.state}"
