"""MySQL's and MariaDB's publishing and results (a part of :mod:`~djqueue.broker.mysql`, whose
:class:`~djqueue.broker.mysql.MySQLOperations` takes them from :class:`MySQLWriting`): one
``INSERT`` per message, a batch as multi-row ``INSERT`` statements in chunks, the results as one
multi-row ``INSERT … ON DUPLICATE KEY UPDATE``. A message larger than the server's
``max_allowed_packet`` is refused before anything is sent
(:class:`~djqueue.exceptions.MessageTooLarge`): MySQL would drop the connection.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import DataError, connections, transaction
from django.utils import timezone

from ..exceptions import MessageTooLarge
from .base import Operations
from .rows import (
    RESULT_COLUMNS, RESULT_UPDATED, RESULTS_TABLE, NewMessage, adapted, insert_sql, row_tail,
    without_nul,
)

if TYPE_CHECKING:
    from ..backends.base import ResultRecord

#: Rows per ``INSERT`` of a batch (fewer when they would not fit in one packet).
INSERT_CHUNK = 500
#: Bytes of a statement besides its texts' (columns, numbers, dates), kept free in a packet.
STATEMENT_ROOM = 64 * 1024
#: Bytes that fit in any statement without asking the server (``max_allowed_packet`` is 16 MiB on
#: MariaDB, 64 MiB on MySQL 8.0 by default).
ALWAYS_FITS = 1024 * 1024 - STATEMENT_ROOM
#: A task id already in the table is not written again (``rows.insert_sql``): a no-op update.
_IF_PRESENT = "ON DUPLICATE KEY UPDATE task_id = task_id"


class MySQLWriting(Operations):
    """Publishing and storing results on MySQL and MariaDB."""

    _packet: int | None = None

    def publish_one(self, message: NewMessage, now: datetime.datetime) -> None:
        self._fits(message.task_id, _escaped_size(message.body) + _escaped_size(message.task_id))
        connection = connections[self.using]
        self.execute(insert_sql(_IF_PRESENT), (message.task_id, message.body,
                                    *adapted(row_tail(message.head, now), connection)))

    def publish_many(self, messages: Iterable[NewMessage], now: datetime.datetime) -> None:
        """Multi-row ``INSERT`` statements of up to :data:`INSERT_CHUNK` rows and one packet
        each, in one transaction (the caller's, when there is one). The rows are written as SQL
        text here, each head's columns escaped once per batch: with a parameter per column the
        driver's escaping of every value was two thirds of a batch's time."""
        connection = connections[self.using]
        tails: dict[Any, str] = {}
        values = insert_sql(_IF_PRESENT).partition(" VALUES ")[0] + " VALUES "
        with transaction.atomic(using=self.using, savepoint=False), connection.cursor() as cursor:
            raw = connection.connection

            def literal(value: object) -> str:
                return raw.literal(value).decode(raw.encoding)

            rows: list[str] = []
            size = 0
            for task_id, body, head in messages:
                tail = tails.get(head)
                if tail is None:
                    tail = tails[head] = ", ".join(
                        map(literal, adapted(row_tail(head, now), connection))) + ")"
                row = f"({literal(task_id)}, {literal(body)}, {tail}"
                length = self._fits(task_id, len(row) if row.isascii() else len(row.encode()))
                if rows and (len(rows) == INSERT_CHUNK or (
                        size + length > ALWAYS_FITS and size + length > self._room())):
                    cursor.execute(values + ", ".join(rows))
                    rows, size = [], 0
                rows.append(row)
                size += length
            if rows:
                cursor.execute(values + ", ".join(rows))

    def results_upsert(
        self, records: Sequence[ResultRecord], only: str | None = None
    ) -> tuple[str, list[object]]:
        """One multi-row ``INSERT … ON DUPLICATE KEY UPDATE`` (``VALUES()``, which MySQL 8.0.20+
        deprecates but both still read; MariaDB lacks the row alias that replaces it). Records
        together too large for one packet raise ``DataError``: the worker then stores them one
        at a time, and fails a task whose result alone is too large with ``EncodeError``."""
        assert only is None, "MySQL stores results in a transaction, not one statement"
        ops = connections[self.using].ops
        created = ops.adapt_datetimefield_value(timezone.now())
        latest = {record.task_id: record for record in records}  # the last for an id wins
        params: list[object] = []
        size = 0
        for record in latest.values():
            for column in RESULT_COLUMNS:
                value = getattr(record, column)
                if isinstance(value, datetime.datetime):
                    value = ops.adapt_datetimefield_value(value)
                elif isinstance(value, str):
                    if "\x00" in value:  # the same readable text as on the other databases
                        value = without_nul(value)
                    size += _escaped_size(value)
                params.append(value)
            params.append(created)
        if size > ALWAYS_FITS and size > self._room():
            raise DataError(f"{len(latest)} results of {size} bytes do not fit in one statement "
                            f"(max_allowed_packet is {self._packet_size()} bytes)")
        row = f"({', '.join(['%s'] * (len(RESULT_COLUMNS) + 1))})"
        updates = ", ".join(f"{c} = VALUES({c})" for c in RESULT_UPDATED)
        sql = (f"INSERT INTO {RESULTS_TABLE} ({', '.join(RESULT_COLUMNS)}, date_created) "
               f"VALUES {', '.join([row] * len(latest))} ON DUPLICATE KEY UPDATE {updates}")
        return sql, params

    def _packet_size(self) -> int:
        """The server's ``max_allowed_packet`` (read once per process)."""
        if self._packet is None:
            with connections[self.using].cursor() as cursor:
                cursor.execute("SELECT @@max_allowed_packet")
                self._packet = int(cursor.fetchone()[0])
        return self._packet

    def _room(self) -> int:
        return self._packet_size() - STATEMENT_ROOM

    def _fits(self, task_id: str, size: int) -> int:
        """``size``: the bytes a message takes in a statement. Raises :class:`MessageTooLarge`
        when they exceed what one statement may hold."""
        if size > ALWAYS_FITS and size > self._room():
            raise MessageTooLarge(
                f"The message {task_id[:40]!r} is {size} bytes long as MySQL receives it; the "
                f"server takes statements of at most {self._packet_size()} bytes "
                "(max_allowed_packet): pass a reference to the data instead")
        return size


def _escaped_size(text: str) -> int:
    """Bytes ``text`` takes in a statement, quoted and escaped (at most, when that is plenty)."""
    size = len(text) if text.isascii() else len(text.encode())
    if 2 * size <= ALWAYS_FITS:
        return 2 * size + 2
    return size + sum(text.count(c) for c in "\\'\"\n\r\x00\x1a") + 2
