"""Results as rows of :class:`djqueue.models.TaskResult` (``CELERY_RESULT_BACKEND = "database"``)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from django.utils import timezone

from ..models import TaskResult
from .base import ResultBackend, ResultRecord

ID_SLICE = 900
_UPDATED = [
    "state", "task_name", "content_type", "result", "traceback", "args", "kwargs",
    "worker", "runtime", "date_done", "queue",
]


class DatabaseBackend(ResultBackend):
    def store(self, records: Sequence[ResultRecord]) -> None:
        if not records:
            return
        # The last record for an id wins (STARTED then SUCCESS in one batch).
        latest = {record.task_id: record for record in records}
        TaskResult.objects.using(self.using).bulk_create(
            [TaskResult(**{f: getattr(r, f) for f in ["task_id", *_UPDATED]}) for r in latest.values()],
            update_conflicts=True,
            unique_fields=["task_id"],
            update_fields=_UPDATED,
        )

    def get(self, task_id: str) -> ResultRecord | None:
        row = (
            TaskResult.objects.using(self.using)
            .filter(task_id=task_id)
            .values("task_id", *_UPDATED)
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
                .values("task_id", *_UPDATED)
            )
            found.update((row["task_id"], ResultRecord(**row)) for row in rows)
        return found

    def forget(self, task_id: str) -> None:
        TaskResult.objects.using(self.using).filter(task_id=task_id).delete()

    def cleanup(self) -> int | None:
        if not self.expires:
            return 0
        cutoff = timezone.now() - datetime.timedelta(seconds=self.expires)
        deleted, _ = TaskResult.objects.using(self.using).filter(date_done__lt=cutoff).delete()
        return deleted
