"""The SQL that moves held messages: start, ack, requeue, defer, retry, reject, recover, purge,
restore, and the idle worker's next-due question. Claiming is in :mod:`djqueue.claiming`,
publishing in :mod:`djqueue.publishing`.

Statements that move several messages take their ids as one array parameter on PostgreSQL, so
they keep one text (and are prepared once, see :mod:`djqueue.sql`). On SQLite, "database is
locked" while waiting for the write lock is retried here (:func:`retry_if_locked`).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from django.db import OperationalError, connections
from django.utils import timezone

from .exceptions import ImproperlyConfigured
from .models import Message, Revocation

logger = logging.getLogger("djqueue.broker")

SUPPORTED_VENDORS = ("postgresql", "sqlite")
TABLE = Message._meta.db_table
REVOKED_TABLE = Revocation._meta.db_table

T = TypeVar("T")


def vendor(using: str) -> str:
    name = connections[using].vendor
    if name not in SUPPORTED_VENDORS:
        raise ImproperlyConfigured(
            f"Database {using!r} is {name}; djqueue's broker supports "
            f"{' and '.join(SUPPORTED_VENDORS)}."
        )
    return name


def retry_if_locked(using: str, operation: Callable[[], T], attempts: int = 50) -> T:
    """Run ``operation``, retrying SQLite's "database is locked" with a growing pause.

    The busy timeout already waits inside SQLite; this covers the cases where SQLite gives up at
    once instead (a write lock that cannot be upgraded) or the timeout ran out under load.
    """
    delay = 0.005
    for attempt in range(attempts):
        try:
            return operation()
        except OperationalError as exc:
            locked = connections[using].vendor == "sqlite" and "locked" in str(exc)
            if not locked or attempt == attempts - 1 or not connections[using].get_autocommit():
                raise
            logger.debug("SQLite database is locked; retrying in %.3fs", delay)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    raise AssertionError("unreachable")


def _ids(using: str, ids: Sequence[int]) -> tuple[str, list[object]]:
    """``id`` is one of ``ids``: one array parameter on PostgreSQL, so the statement's text is
    the same whatever the number (and can be prepared once)."""
    if connections[using].vendor == "postgresql":
        return "id = ANY(%s::bigint[])", [list(ids)]
    return "id IN (" + ", ".join(["%s"] * len(ids)) + ")", list(ids)


def _owned(owner: int | None) -> tuple[str, list[object]]:
    """Only rows this worker process still holds: after a recovery gave a message to another
    worker, a late acknowledgement from the old holder must not touch it."""
    return (" AND owner = %s", [owner]) if owner is not None else ("", [])


def now_param(using: str) -> object:
    """The current time as the database driver wants it."""
    return connections[using].ops.adapt_datetimefield_value(timezone.now())


def _update(using: str, sql: str, params: list[object]) -> int:
    def run() -> int:
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount

    return retry_if_locked(using, run)


def start_statement(
    using: str, ids: Sequence[int], acks_late_ids: Sequence[int] = (), owner: int | None = None
) -> tuple[str, list[object]]:
    """Mark reserved messages as started (handed to the pool), recording their ``acks_late``."""
    where, params = _ids(using, ids)
    late = set(acks_late_ids)
    if not late:
        flag, flag_params = "FALSE", []
    elif late >= set(ids):
        flag, flag_params = "TRUE", []
    else:
        late_where, flag_params = _ids(using, sorted(late))
        flag = f"({late_where})"
    mine, mine_params = _owned(owner)
    return (
        f"UPDATE {TABLE} SET state = 'started', started_at = %s, acks_late = {flag} "
        f"WHERE {where}{mine}",
        [now_param(using), *flag_params, *params, *mine_params],
    )


def start(
    using: str, ids: Sequence[int], acks_late_ids: Sequence[int] = (), owner: int | None = None
) -> None:
    """Run :func:`start_statement` alone."""
    if ids:
        _update(using, *start_statement(using, ids, acks_late_ids, owner))


def ack_statement(
    using: str, ids: Sequence[int], owner: int | None = None
) -> tuple[str, list[object]]:
    """Acknowledge finished messages: they leave the table."""
    where, params = _ids(using, ids)
    mine, mine_params = _owned(owner)
    return f"DELETE FROM {TABLE} WHERE {where}{mine}", [*params, *mine_params]


def ack(using: str, ids: Sequence[int], owner: int | None = None) -> None:
    """Run :func:`ack_statement` alone."""
    if ids:
        _update(using, *ack_statement(using, ids, owner))


def requeue(using: str, ids: Sequence[int], owner: int | None = None) -> int:
    """Hand held messages (reserved, or started with ``acks_late``) back to the queue."""
    if not ids:
        return 0
    where, params = _ids(using, ids)
    mine, mine_params = _owned(owner)
    return _update(
        using,
        f"UPDATE {TABLE} SET state = 'ready', worker = '', owner = NULL, lease_until = NULL, "
        f"started_at = NULL WHERE {where} AND state IN ('reserved', 'started'){mine}",
        [*params, *mine_params],
    )


def defer(using: str, ids: Sequence[int], seconds: float, owner: int | None = None) -> int:
    """Hand reserved (not started) messages back to the queue, not to be claimed for ``seconds``.

    Rate-limited messages wait this way: in the table, visible to every worker, not in memory.
    """
    if not ids:
        return 0
    where, params = _ids(using, ids)
    mine, mine_params = _owned(owner)
    until = timezone.now() + datetime.timedelta(seconds=seconds)
    return _update(
        using,
        f"UPDATE {TABLE} SET state = 'ready', worker = '', owner = NULL, lease_until = NULL, "
        f"available_at = %s WHERE {where} AND state = 'reserved'{mine}",
        [connections[using].ops.adapt_datetimefield_value(until), *params, *mine_params],
    )


def retry(
    using: str,
    message_id: int,
    available_at: datetime.datetime,
    body: str | None,
    owner: int | None = None,
) -> None:
    """Put a message back for its next attempt at ``available_at`` (``Task.retry``)."""
    ops = connections[using].ops
    sets = "state = 'ready', worker = '', owner = NULL, lease_until = NULL, started_at = NULL, "
    sets += "retries = retries + 1, available_at = %s"
    params: list[object] = [ops.adapt_datetimefield_value(available_at)]
    if body is not None:
        sets += ", body = %s"
        params.append(body)
    mine, mine_params = _owned(owner)
    _update(using, f"UPDATE {TABLE} SET {sets} WHERE id = %s{mine}",
            [*params, message_id, *mine_params])


def extend_leases(using: str, owner: int, lease_seconds: float) -> None:
    """The heartbeat: keep holding every message this worker process holds."""
    until = timezone.now() + datetime.timedelta(seconds=lease_seconds)
    _update(
        using,
        f"UPDATE {TABLE} SET lease_until = %s WHERE owner = %s "
        "AND state IN ('reserved', 'started')",
        [connections[using].ops.adapt_datetimefield_value(until), owner],
    )


def recover_expired_leases(using: str) -> list[tuple[str, str, str, str]]:
    """Settle the messages of workers whose heartbeat stopped (their lease ran out).

    Reserved messages, and started ones with ``acks_late``, go back to the queue; started ones
    without it are set aside (state ``rejected``) and returned as ``(task_id, task_name, worker, queue)``
    so the caller can record ``WorkerLostError``. Each statement moves a row at most once, so
    several workers recovering at the same moment cannot settle a message twice.
    """
    now = now_param(using)
    _update(
        using,
        f"UPDATE {TABLE} SET state = 'ready', worker = '', owner = NULL, lease_until = NULL, "
        "started_at = NULL WHERE state IN ('reserved', 'started') AND lease_until < %s "
        "AND (state = 'reserved' OR acks_late)",
        [now],
    )

    def run() -> list[tuple[str, str, str, str]]:
        with connections[using].cursor() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET state = 'rejected', lease_until = NULL, error = "
                "'WorkerLostError: its worker stopped sending heartbeats while it ran' "
                "WHERE state = 'started' AND lease_until < %s RETURNING task_id, task_name, worker, queue",
                [now],
            )
            return [tuple(row) for row in cursor.fetchall()]

    return retry_if_locked(using, run)


def revoked_among(using: str, task_ids: Sequence[str]) -> dict[str, tuple[bool, str]]:
    """Which of ``task_ids`` are revoked: ``{task_id: (terminate, signal)}``."""
    if not task_ids:
        return {}
    marks = ", ".join(["%s"] * len(task_ids))
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT task_id, terminate, signal FROM {REVOKED_TABLE} WHERE task_id IN ({marks})",
            list(task_ids),
        )
        return {row[0]: (bool(row[1]), row[2]) for row in cursor.fetchall()}


def reject(using: str, ids: Sequence[int], error: str, owner: int | None = None) -> None:
    """Set messages aside that cannot run here (unknown task, undecodable body).

    They stay in the table, visible in the admin, and are never claimed again unless re-enqueued.
    """
    if ids:
        where, params = _ids(using, ids)
        mine, mine_params = _owned(owner)
        _update(
            using,
            f"UPDATE {TABLE} SET state = 'rejected', lease_until = NULL, error = %s "
            f"WHERE {where}{mine}",
            [error, *params, *mine_params],
        )


def set_aside_unreadable(
    using: str, message_id: int, error: str, texts: Mapping[str, str], owner: int | None = None
) -> None:
    """Set aside a message whose ``texts`` columns are not valid UTF-8 (SQLite keeps any bytes),
    storing them as given (decoded with U+FFFD for the invalid bytes) in the same statement."""
    sets = "".join(f", {column} = %s" for column in texts)
    mine, mine_params = _owned(owner)
    _update(
        using,
        f"UPDATE {TABLE} SET state = 'rejected', lease_until = NULL, error = %s{sets} "
        f"WHERE id = %s{mine}",
        [error, *texts.values(), message_id, *mine_params],
    )


def purge(using: str, queues: Sequence[str]) -> int:
    """Delete every waiting message in ``queues``; return how many."""
    if not queues:
        return 0
    marks = ", ".join(["%s"] * len(queues))
    return _update(
        using, f"DELETE FROM {TABLE} WHERE state = 'ready' AND queue IN ({marks})", list(queues)
    )


def restore_rejected(using: str, ids: Sequence[int]) -> int:
    """Put messages that were set aside (state ``rejected``) back in their queue, to run now."""
    if not ids:
        return 0
    where, params = _ids(using, ids)
    return _update(
        using,
        f"UPDATE {TABLE} SET state = 'ready', error = '', worker = '', owner = NULL, "
        f"lease_until = NULL, started_at = NULL, available_at = %s WHERE {where} "
        "AND state = 'rejected'",
        [now_param(using), *params],
    )


def next_due(using: str, queues: Sequence[str]) -> float | None:
    """Seconds until the earliest delayed (countdown/eta) message in ``queues`` is due, if any.

    An idle worker sleeps that long instead of a whole polling interval.
    """
    if not queues:
        return None
    marks = ", ".join(["%s"] * len(queues))
    if vendor(using) == "postgresql":
        sql = (
            f"SELECT EXTRACT(EPOCH FROM min(available_at) - now()) FROM {TABLE} "
            f"WHERE state = 'ready' AND queue IN ({marks}) AND available_at > now()"
        )
        params: list[object] = list(queues)
    else:
        now = now_param(using)
        sql = (
            f"SELECT (julianday(min(available_at)) - julianday(%s)) * 86400.0 FROM {TABLE} "
            f"WHERE state = 'ready' AND queue IN ({marks}) AND available_at > %s"
        )
        params = [now, *queues, now]

    def run() -> float | None:
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            (seconds,) = cursor.fetchone()
        return None if seconds is None else max(float(seconds), 0.0)

    return retry_if_locked(using, run)
