"""Results as rows of :class:`djqueue.models.TaskResult` (``CELERY_RESULT_BACKEND = "database"``)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from django.utils import timezone

from ..models import TaskResult
from .base import ResultBackend, ResultRecord

_UPDATED = [
    "state", "task_name", "content_type", "result", "traceback", "args", "kwargs",
    "worker", "runtime", "date_done",
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

    def forget(self, task_id: str) -> None:
        TaskResult.objects.using(self.using).filter(task_id=task_id).delete()

    def cleanup(self) -> int | None:
        if not self.expires:
            return 0
        cutoff = timezone.now() - datetime.timedelta(seconds=self.expires)
        deleted, _ = TaskResult.objects.using(self.using).filter(date_done__lt=cutoff).delete()
        return deleted
