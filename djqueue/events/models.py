"""The event table: what ``celery events`` shows, written by workers that send events.

``models.py`` imports this so Django finds it.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import models


class Event(models.Model):
    """One event, of Celery's types (``task-received``, ``task-started``, ``task-succeeded``,
    ``task-failed``, ``task-retried``, ``task-revoked``, ``task-rejected``, ``worker-online``,
    ``worker-heartbeat``, ``worker-offline``). Rows older than ``DJQUEUE_EVENTS_EXPIRES`` are
    deleted by the workers' heartbeats. Readers follow the id, which only grows."""

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=32)
    hostname = models.CharField(max_length=255, help_text="Node name of the worker.")
    timestamp = models.DateTimeField(db_index=True, help_text="When the worker saw it.")
    task_id = models.CharField("task id", max_length=255, blank=True, default="")
    task_name = models.CharField("task name", max_length=255, blank=True, default="")
    fields = models.TextField(default="{}", help_text="The event's other fields, as JSON.")

    class Meta:
        db_table = "djqueue_event"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.type} {self.task_id or self.hostname}"

    def data(self) -> dict[str, Any]:
        """The event's other fields."""
        return json.loads(self.fields or "{}")
