"""Publishing: messages enter the broker table, many in one statement.

The rows travel as one JSON document; on PostgreSQL the same statement sends ``NOTIFY`` (see
:mod:`djqueue.notify`). Everything that moves messages after this lives in :mod:`djqueue.broker`.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable, Sequence

from django.db import connections, models
from django.utils import timezone

from .broker import TABLE, retry_if_locked, vendor
from .models import Message

#: The channel that carries "new messages in this queue" (the payload is the queue name).
NOTIFY_CHANNEL = "djqueue"


@functools.cache
def _publish_plan(kind: str) -> tuple[str, tuple[tuple[str, str, bool, bool], ...]]:
    """One ``INSERT`` for any number of messages, from a single JSON parameter, and the columns
    it reads: ``(column, attribute, is a datetime, stamped with the time of publishing)``.

    The columns are every concrete field of :class:`Message` but the id, so a new field needs no
    edit here. On PostgreSQL the same statement sends one ``NOTIFY`` per queue it wrote to, which
    the database delivers when the caller's transaction commits (and drops if it rolls back).
    """
    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(f.column for f in fields)
    if kind == "postgresql":
        sql = (
            f"WITH added AS (INSERT INTO {TABLE} ({columns}) SELECT {columns} "
            f"FROM json_populate_recordset(NULL::{TABLE}, %s::json) RETURNING queue) "
            f"SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM (SELECT DISTINCT queue FROM added) q"
        )
    else:
        picks = ", ".join(f"json_extract(value, '$.{f.column}')" for f in fields)
        sql = f"INSERT INTO {TABLE} ({columns}) SELECT {picks} FROM json_each(%s)"
    plan = tuple(
        (
            f.column,
            f.attname,
            isinstance(f, models.DateTimeField),
            bool(getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)),
        )
        for f in fields
    )
    return sql, plan


def publish(messages: Sequence[Message], using: str) -> None:
    """Insert messages in one statement, however many. Inside ``transaction.atomic()`` they are
    part of the caller's transaction: workers see them (and are notified) only when it commits.

    The rows travel as one JSON document rather than through the ORM: binding thousands of
    parameters, or saving model instances one by one, would cost more than the insert itself.
    """
    if not messages:
        return
    kind = vendor(using)
    sql, plan = _publish_plan(kind)
    connection = connections[using]
    as_text: Callable[[datetime.datetime], object] = (
        datetime.datetime.isoformat
        if kind == "postgresql"
        else connection.ops.adapt_datetimefield_value
    )
    now = as_text(timezone.now())
    rows = []
    for message in messages:
        row = {}
        for column, attname, is_time, stamped in plan:
            value = now if stamped else getattr(message, attname)
            if is_time and value is not None and not stamped:
                value = as_text(value)
            row[column] = value
        rows.append(row)
    payload = json.dumps(rows, separators=(",", ":"))

    def run() -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, [payload])

    retry_if_locked(using, run)
