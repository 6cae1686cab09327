"""Publishing: new messages enter the broker table.

:func:`publish` writes one message as one statement and a batch (a ``group``) in one transaction,
through the broker's operations (:mod:`djqueue.broker`): on PostgreSQL one ``INSERT`` that also
sends ``NOTIFY`` (see :mod:`djqueue.broker.listen`), which the database delivers when the caller's
transaction commits and drops if it rolls back, and for a batch one ``COPY`` and one ``SELECT
pg_notify(…)``; on SQLite an ``INSERT``, and one ``executemany`` for a batch. Everything that
moves messages after this lives in :mod:`djqueue.broker`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from django.utils import timezone

from ..broker import operations
from ..broker.rows import NewMessage
from ..signals import after_task_publish
from . import tracing

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


def publish(messages: Iterable[NewMessage], using: str, count: int | None = None) -> None:
    """Write ``messages`` (``count`` of them: the length of a sequence, given for any other
    iterable, which is read once, while rows are written). Inside ``transaction.atomic()`` they
    are part of the caller's transaction: workers see them (and are notified) only when it
    commits; outside one, a batch still commits as a whole."""
    if count is None or after_task_publish.receivers:
        messages = list(messages)
        count = len(messages)
    if not count:
        return
    broker = operations(using)
    now = timezone.now()
    if count == 1:
        (message,) = messages
        broker.publish_one(message, now)
    else:
        broker.publish_many(messages, now)
    if after_task_publish.receivers:
        tracing.after_publish(messages)
