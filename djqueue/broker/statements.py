"""The SQL that moves held messages: start, ack, requeue, defer, retry, reject, recover, purge,
restore, and the idle worker's next-due question. Claiming is in :mod:`djqueue.broker.claim`,
publishing in :mod:`djqueue.client.publishing`.

Statements that move several messages take their ids as one array parameter on PostgreSQL, so
they keep one text (and are prepared once, see :mod:`djqueue.broker.sql`). On SQLite, "database is
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

from ..exceptions import ImproperlyConfigured
from .rows import LOST_ERROR, LOST_ERROR_REPEATED, REVOKED_TABLE, TABLE, Lost

logger = logging.getLogger("djqueue.broker")

SUPPORTED_VENDORS = ("postgresql", "sqlite")

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


def now_sql(using: str) -> tuple[str, list[object]]:
    """The current time for a lease or a start, as ``(sql, params)``: the database's clock on
    PostgreSQL, which every worker host shares, so hosts whose clocks disagree still agree on
    whose lease has run out; the worker's own clock on SQLite, whose workers share one host."""
    if connections[using].vendor == "postgresql":
        return "now()", []
    return "%s", [now_param(using)]


def lease_sql(using: str, seconds: float) -> tuple[str, list[object]]:
    """``now + seconds`` on the clock of :func:`now_sql`, as ``(sql, params)``."""
    if connections[using].vendor == "postgresql":
        return "now() + make_interval(secs => %s)", [float(seconds)]
    until = timezone.now() + datetime.timedelta(seconds=seconds)
    return "%s", [connections[using].ops.adapt_datetimefield_value(until)]


def _update(using: str, sql: str, params: list[object]) -> int:
    def run() -> int:
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount

    return retry_if_locked(using, run)


def _returning(using: str, sql: str, params: list[object]) -> list[tuple[object, ...]]:
    """Run a statement with ``RETURNING``; its rows."""
    def run() -> list[tuple[object, ...]]:
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()]

    return retry_if_locked(using, run)


def start_statement(
    using: str, ids: Sequence[int], acks_late_ids: Sequence[int] = (), owner: int | None = None,
    *, lease_seconds: float,
) -> tuple[str, list[object]]:
    """Mark reserved messages as started (handed to the pool), recording their ``acks_late``,
    counting the delivery and renewing the lease. Its rows are ``(id, task_id)`` of the messages
    it started: only those may run. A reserved message this worker no longer holds (its lease ran
    out while the database was away, and another worker recovered it) is not among them."""
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
    now, now_params = now_sql(using)
    lease, lease_params = lease_sql(using, lease_seconds)
    return (
        f"UPDATE {TABLE} SET state = 'started', started_at = {now}, lease_until = {lease}, "
        f"deliveries = deliveries + 1, acks_late = {flag} "
        f"WHERE {where} AND state = 'reserved'{mine} RETURNING id, task_id",
        [*now_params, *lease_params, *flag_params, *params, *mine_params],
    )


def start(
    using: str, ids: Sequence[int], acks_late_ids: Sequence[int] = (), owner: int | None = None,
    *, lease_seconds: float,
) -> list[tuple[int, str]]:
    """Run :func:`start_statement` alone; returns ``(id, task_id)`` of the messages started."""
    if not ids:
        return []
    return _returning(using, *start_statement(using, ids, acks_late_ids, owner,
                                              lease_seconds=lease_seconds))


def ack_statement(
    using: str, ids: Sequence[int], owner: int | None = None
) -> tuple[str, list[object]]:
    """Acknowledge finished messages: they leave the table. Its rows are the task ids of the
    messages it deleted: an outcome is stored only for a message its worker still held."""
    where, params = _ids(using, ids)
    mine, mine_params = _owned(owner)
    return (f"DELETE FROM {TABLE} WHERE {where}{mine} RETURNING task_id",
            [*params, *mine_params])


def ack(using: str, ids: Sequence[int], owner: int | None = None) -> list[str]:
    """Run :func:`ack_statement` alone; returns the task ids of the messages deleted."""
    if not ids:
        return []
    return [row[0] for row in _returning(using, *ack_statement(using, ids, owner))]


def requeue(using: str, ids: Sequence[int], owner: int | None = None) -> list[str]:
    """Hand held messages (reserved, or started with ``acks_late``) back to the queue.
    Returns the task ids of those this worker still held."""
    if not ids:
        return []
    where, params = _ids(using, ids)
    mine, mine_params = _owned(owner)
    return [row[0] for row in _returning(
        using,
        f"UPDATE {TABLE} SET state = 'ready', worker = '', owner = NULL, lease_until = NULL, "
        "started_at = NULL WHERE "
        f"{where} AND state IN ('reserved', 'started'){mine} RETURNING task_id",
        [*params, *mine_params],
    )]


def unstart(using: str, ids: Sequence[int], owner: int | None = None) -> list[str]:
    """Like :func:`requeue`, for started messages that never began: their start is not counted
    as a delivery (:data:`DJQUEUE_MAX_DELIVERIES`)."""
    if not ids:
        return []
    where, params = _ids(using, ids)
    mine, mine_params = _owned(owner)
    return [row[0] for row in _returning(
        using,
        f"UPDATE {TABLE} SET state = 'ready', worker = '', owner = NULL, lease_until = NULL, "
        "started_at = NULL, deliveries = CASE WHEN state = 'started' AND deliveries > 0 "
        "THEN deliveries - 1 ELSE deliveries END WHERE "
        f"{where} AND state IN ('reserved', 'started'){mine} RETURNING task_id",
        [*params, *mine_params],
    )]


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
) -> list[str]:
    """Put a message back for its next attempt at ``available_at`` (``Task.retry``); the next
    attempt counts its deliveries afresh. Returns its task id if this worker still held it."""
    ops = connections[using].ops
    sets = "state = 'ready', worker = '', owner = NULL, lease_until = NULL, started_at = NULL, "
    sets += "retries = retries + 1, deliveries = 0, available_at = %s"
    params: list[object] = [ops.adapt_datetimefield_value(available_at)]
    if body is not None:
        sets += ", body = %s"
        params.append(body)
    mine, mine_params = _owned(owner)
    return [row[0] for row in _returning(
        using, f"UPDATE {TABLE} SET {sets} WHERE id = %s{mine} RETURNING task_id",
        [*params, message_id, *mine_params])]


def _unlocked_held(using: str, condition: str) -> str:
    """``id`` among the held messages that match ``condition``, skipping (on PostgreSQL) rows
    another transaction has locked, so that the heartbeat never waits for, or deadlocks with,
    a worker's round that is moving those rows (it settles or renews them itself)."""
    held = f"state IN ('reserved', 'started') AND {condition}"
    if connections[using].vendor != "postgresql":
        return held
    return f"id IN (SELECT id FROM {TABLE} WHERE {held} FOR UPDATE SKIP LOCKED)"


def extend_leases(using: str, owner: int, lease_seconds: float) -> int:
    """The heartbeat: keep holding every message this worker process holds."""
    lease, lease_params = lease_sql(using, lease_seconds)
    return _update(
        using,
        f"UPDATE {TABLE} SET lease_until = {lease} WHERE {_unlocked_held(using, 'owner = %s')}",
        [*lease_params, owner],
    )


def recover_expired_leases(using: str, max_deliveries: int | None = None) -> list[Lost]:
    """Settle the messages of workers whose heartbeat stopped (their lease ran out).

    Reserved messages, and started ones with ``acks_late`` started fewer than
    ``max_deliveries`` times, go back to the queue; other started ones are set aside (state
    ``rejected``, no owner: a late outcome from the lost worker changes nothing) and returned
    so the caller can record ``WorkerLostError``. Leases are compared with the database's clock
    (:func:`now_sql`). Each statement moves a row at most once, so several workers recovering at
    the same moment cannot settle a message twice.
    """
    now, now_params = now_sql(using)
    expired = f"lease_until < {now}"
    if max_deliveries:
        again, again_params = "(state = 'reserved' OR (acks_late AND deliveries < %s))", [
            max_deliveries]
    else:
        again, again_params = "(state = 'reserved' OR acks_late)", []
    _update(
        using,
        f"UPDATE {TABLE} SET state = 'ready', worker = '', owner = NULL, lease_until = NULL, "
        f"started_at = NULL WHERE {_unlocked_held(using, f'{expired} AND {again}')}",
        [*now_params, *again_params],
    )
    lost = _unlocked_held(using, f"state = 'started' AND {expired}")
    rows = _returning(
        using,
        f"UPDATE {TABLE} SET state = 'rejected', owner = NULL, lease_until = NULL, error = "
        "CASE WHEN acks_late THEN %s || CAST(deliveries AS TEXT) || ' times' ELSE %s END "
        f"WHERE {lost} RETURNING task_id, task_name, worker, queue, acks_late, deliveries",
        [LOST_ERROR_REPEATED, LOST_ERROR, *now_params],
    )
    return [Lost(str(r[0]), str(r[1]), str(r[2]), str(r[3]), bool(r[4]), int(r[5]))  # type: ignore[arg-type,call-overload]
            for r in rows]


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


def reject(using: str, ids: Sequence[int], error: str, owner: int | None = None) -> list[str]:
    """Set messages aside that cannot run here (unknown task, undecodable body, lost too often).

    They stay in the table, visible in the admin, and are never claimed again unless re-enqueued.
    Returns the task ids of those this worker still held.
    """
    if not ids:
        return []
    where, params = _ids(using, ids)
    mine, mine_params = _owned(owner)
    return [row[0] for row in _returning(
        using,
        f"UPDATE {TABLE} SET state = 'rejected', lease_until = NULL, error = %s "
        f"WHERE {where}{mine} RETURNING task_id",
        [error, *params, *mine_params],
    )]


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
