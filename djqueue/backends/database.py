"""Results as rows of :class:`djqueue.models.TaskResult` (``CELERY_RESULT_BACKEND = "database"``)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from django.db import connections
from django.utils import timezone

from ..broker.rows import RESULT_COLUMNS, RESULT_UPDATED, results_document
from ..models import TaskResult
from .base import ResultBackend, ResultRecord

ID_SLICE = 900
TABLE = TaskResult._meta.db_table
#: PostgreSQL types of the columns, to read them out of the JSON document.
_PG_TYPES = {"runtime": "float8", "date_done": "timestamptz"}


class DatabaseBackend(ResultBackend):
    def store(self, records: Sequence[ResultRecord]) -> None:
        if not records:
            return
        sql, params = self.upsert(records)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)

    def upsert(
        self, records: Sequence[ResultRecord], only: str | None = None
    ) -> tuple[str, list[object]]:
        """One ``INSERT … ON CONFLICT`` for any number of records, as ``(sql, params)``.
        ``only`` (PostgreSQL) is a query whose rows are the task ids to store: the others
        are left out (the worker's round stores outcomes only for messages it still holds).

        The rows travel as one JSON document, a list per row (as messages do when published),
        so a batch costs one statement and no model instances; the worker embeds this statement
        in its round (:mod:`djqueue.worker.rounds`). PostgreSQL reads the document as ``jsonb``, which
        it parses once: as ``json``, every ``->>`` lexed the row's text again. The last record
        for an id wins (STARTED then SUCCESS in one batch).
        """
        connection = connections[self.using]
        postgres = connection.vendor == "postgresql"
        as_text = (datetime.datetime.isoformat if postgres
                   else connection.ops.adapt_datetimefield_value)
        document = results_document(records, as_text)
        columns = ", ".join(RESULT_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RESULT_UPDATED)
        if postgres:
            picks = ", ".join(f"(e->>{i})::{_PG_TYPES.get(c, 'text')}"
                              for i, c in enumerate(RESULT_COLUMNS))
            sql = (
                f"INSERT INTO {TABLE} ({columns}, date_created) SELECT {picks}, now() "
                f"FROM jsonb_array_elements(%s::jsonb) AS e "
                + (f"WHERE (e->>0) IN ({only}) " if only else "")
                + f"ON CONFLICT (task_id) DO UPDATE SET {updates}"
            )
            return sql, [document]
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(RESULT_COLUMNS)))
        # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT's join.
        sql = (
            f"INSERT INTO {TABLE} ({columns}, date_created) SELECT {picks}, %s "
            f"FROM json_each(%s) WHERE true ON CONFLICT (task_id) DO UPDATE SET {updates}"
        )
        return sql, [as_text(timezone.now()), document]

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

    def forget(self, task_id: str) -> None:
        TaskResult.objects.using(self.using).filter(task_id=task_id).delete()

    def cleanup(self) -> int | None:
        if not self.expires:
            return 0
        cutoff = timezone.now() - datetime.timedelta(seconds=self.expires)
        deleted, _ = TaskResult.objects.using(self.using).filter(date_done__lt=cutoff).delete()
        return deleted
