"""Results as rows of :class:`djqueue.models.TaskResult` (``CELERY_RESULT_BACKEND = "database"``)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from django.db import connections
from django.utils import timezone

from ..broker import operations
from ..broker.base import ID_SLICE
from ..broker.rows import RESULT_UPDATED
from ..models import TaskResult
from .base import ResultBackend, ResultRecord


class DatabaseBackend(ResultBackend):
    def store(self, records: Sequence[ResultRecord]) -> None:
        """One ``INSERT … ON CONFLICT`` for any number of records, from a JSON document of rows
        (:meth:`djqueue.broker.base.Operations.results_upsert`); the worker's round embeds the
        same statement (:mod:`djqueue.worker.rounds`)."""
        if not records:
            return
        sql, params = operations(self.using).results_upsert(records)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)

    def get(self, task_id: str) -> ResultRecord | None:
        row = (
            TaskResult.objects.using(self.using)
            .filter(task_id=task_id)
            .values("task_id", *RESULT_UPDATED)
            .first()
        )
        return ResultRecord(**row) if row else None

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        found: dict[str, ResultRecord] = {}
        # In slices: SQLite refuses statements with more than a few thousand parameters.
        for start in range(0, len(task_ids), ID_SLICE):
            rows = (
                TaskResult.objects.using(self.using)
                .filter(task_id__in=task_ids[start : start + ID_SLICE])
                .values("task_id", *RESULT_UPDATED)
            )
            found.update((row["task_id"], ResultRecord(**row)) for row in rows)
        return found

    def results_of(self, task_ids: Sequence[str]) -> dict[str, tuple[str, str, str | None]]:
        """Three columns and no model layer: a chord of 10,000 read its members' results in
        50 ms this way, against 250 ms through :meth:`get_many` (and in 15 ms in one statement on
        PostgreSQL, :meth:`~djqueue.broker.base.Operations.results_of`)."""
        return {row[0]: row[1:] for row in operations(self.using).results_of(task_ids)}

    def forget(self, task_id: str) -> None:
        TaskResult.objects.using(self.using).filter(task_id=task_id).delete()

    def cleanup(self) -> int | None:
        if not self.expires:
            return 0
        cutoff = timezone.now() - datetime.timedelta(seconds=self.expires)
        deleted, _ = TaskResult.objects.using(self.using).filter(date_done__lt=cutoff).delete()
        return deleted
