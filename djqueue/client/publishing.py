"""Publishing: new messages enter the broker table.

One message is one ``INSERT … VALUES`` statement; on PostgreSQL the same statement sends
``NOTIFY`` (see :mod:`djqueue.broker.listen`), which the database delivers when the caller's transaction
commits and drops if it rolls back. A batch (a ``group``) is written in one transaction: one
``COPY`` and one ``SELECT pg_notify(…)`` on PostgreSQL, one ``executemany`` on SQLite. Everything
that moves messages after this lives in :mod:`djqueue.broker.statements`.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from ..broker import sql
from ..broker.rows import TABLE, MessageHead, NewMessage, insert_sql, row_plan, row_tail
from ..broker.statements import retry_if_locked, vendor

#: The channel that carries "new messages in this queue" (the payload is the queue name).
NOTIFY_CHANNEL = "djqueue"
#: Rows per write of a batch ``COPY`` (see :func:`_copy`).
COPY_CHUNK = 500


#: Byte maps that set a UUID's version (4, in the 7th byte) and variant (RFC 4122, the 9th).
_VERSION_4 = bytes((byte & 0x0F) | 0x40 for byte in range(256))
_VARIANT = bytes((byte & 0x3F) | 0x80 for byte in range(256))


def new_task_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, from one read of the system's randomness:
    a group needs thousands, and ``uuid.uuid4()`` costs more than building the message."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    d = raw.hex()
    return [
        f"{d[i:i + 8]}-{d[i + 8:i + 12]}-{d[i + 12:i + 16]}-{d[i + 16:i + 20]}-{d[i + 20:i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


@functools.cache
def _insert_sql(kind: str) -> str:
    insert = insert_sql()
    if kind == "postgresql":
        return (f"WITH added AS ({insert} RETURNING queue) "
                f"SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM added")
    return insert


def publish(messages: Iterable[NewMessage], using: str, count: int | None = None) -> None:
    """Write ``messages`` (``count`` of them: the length of a sequence, given for any other
    iterable, which is read once, while rows are written). Inside ``transaction.atomic()`` they
    are part of the caller's transaction: workers see them (and are notified) only when it
    commits; outside one, a batch still commits as a whole."""
    if count is None:
        messages = list(messages)
        count = len(messages)
    if not count:
        return
    kind = vendor(using)
    connection = connections[using]
    now = timezone.now()
    if count == 1:
        (message,) = messages
        row = (message.task_id, message.body, *row_tail(message.head, now))
        if kind == "sqlite":
            row = _adapted(row, connection)
        retry_if_locked(using, lambda: sql.execute(using, _insert_sql(kind), row))
    elif kind == "postgresql":
        _copy(connection, using, messages, now)
    else:
        rows = _sqlite_rows(messages, now, connection)
        retry_if_locked(using, lambda: _executemany(connection, using, _insert_sql(kind), rows))


def _adapted(values: tuple[Any, ...], connection: BaseDatabaseWrapper) -> tuple[Any, ...]:
    """Datetimes as SQLite stores them (Django's text form); ``values`` are the last columns."""
    adapt = connection.ops.adapt_datetimefield_value
    is_time = row_plan().is_time[-len(values):]
    return tuple(adapt(value) if time else value for value, time in zip(values, is_time))


def _executemany(
    connection: BaseDatabaseWrapper, using: str, sql: str, rows: list[tuple[Any, ...]]
) -> None:
    with transaction.atomic(using=using, savepoint=False), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _sqlite_rows(
    messages: Iterable[NewMessage], now: datetime.datetime, connection: BaseDatabaseWrapper
) -> list[tuple[Any, ...]]:
    adapted: dict[MessageHead, tuple[Any, ...]] = {}  # one adaptation per head, not per message
    rows = []
    for task_id, body, head in messages:
        tail = adapted.get(head)
        if tail is None:
            tail = adapted[head] = _adapted(row_tail(head, now), connection)
        rows.append((task_id, body, *tail))
    return rows


def _copy(
    connection: BaseDatabaseWrapper, using: str, messages: Iterable[NewMessage],
    now: datetime.datetime,
) -> None:
    """``COPY`` the rows, then notify every queue written to, in one transaction (the caller's,
    when there is one): workers never see rows they were not woken for, and a rollback drops
    both. The text is built here, with each head's columns formatted once per batch, and sent
    every ``COPY_CHUNK`` rows: PostgreSQL stores those while the next ones are built (and, from
    a ``group``, encoded), so the two processes work side by side."""
    tails: dict[MessageHead, str] = {}
    queues: dict[str, None] = {}
    copy_sql = f"COPY {TABLE} ({', '.join(row_plan().columns)}) FROM STDIN"
    with transaction.atomic(using=using, savepoint=False), connection.cursor() as cursor:
        with connection.wrap_database_errors:
            with cursor.copy(copy_sql) as copy:
                lines = []
                for task_id, body, head in messages:
                    tail = tails.get(head)
                    if tail is None:
                        tail = tails[head] = "\t".join(map(_copy_field, row_tail(head, now))) + "\n"
                        queues[head.queue] = None
                    # Bodies come from djqueue.serialization: ASCII JSON or base64, whose only
                    # character COPY treats specially is the backslash.
                    if "\\" in body:
                        body = body.replace("\\", "\\\\")
                    if "\\" in task_id or not task_id.isprintable():  # a task id the caller chose
                        task_id = _copy_field(task_id)
                    lines.append(f"{task_id}\t{body}\t{tail}")
                    if len(lines) == COPY_CHUNK:
                        copy.write("".join(lines))
                        lines = []
                copy.write("".join(lines))
        cursor.execute(
            "SELECT pg_notify(%s, queue) FROM unnest(%s::text[]) AS q(queue)",
            [NOTIFY_CHANNEL, list(queues)],
        )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_FORMATS: dict[type, Callable[[Any], str]] = {
    bool: lambda value: "t" if value else "f",
    datetime.datetime: datetime.datetime.isoformat,
    int: str,
    float: repr,
}


def _copy_field(value: Any) -> str:
    """One value in ``COPY``'s text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    return _COPY_FORMATS.get(type(value), str)(value)
