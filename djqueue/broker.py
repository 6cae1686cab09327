"""The only module with SQL that moves messages: publish, claim, start, ack, requeue, defer, reject,
purge.

Claims are batches taken in one statement. On PostgreSQL the candidate rows are locked with
``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on each other nor take the same row.
On SQLite the single ``UPDATE … RETURNING`` runs under the database's one write lock, which gives
the same guarantee; "database is locked" while waiting for that lock is retried here.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(slots=True)
class Claimed:
    """A message this worker now holds."""

    id: int
    task_id: str
    task_name: str
    queue: str
    priority: int
    content_type: str
    body: str
    retries: int
    time_limit: float | None
    soft_time_limit: float | None
    expired: bool
    revoked: bool
    started: bool = False  # marked started by the claim itself (see StartNow)


@dataclass(slots=True)
class StartNow:
    """Which claimed messages the claim marks started at once, because the pool takes them
    straight away: among the first ``idle`` (in claim order), those of ``names``; among the first
    ``idle + queued``, those of ``short_names`` (tasks short enough to queue behind others).
    ``acks_late_names`` are recorded as such."""

    idle: int
    names: Sequence[str]
    queued: int
    short_names: Sequence[str]
    acks_late_names: Sequence[str]

    def __bool__(self) -> bool:
        return bool((self.idle and self.names) or (self.idle + self.queued and self.short_names))


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


def _now_param(using: str) -> object:
    return connections[using].ops.adapt_datetimefield_value(timezone.now())


def claim_statement(
    using: str,
    queues: Sequence[str],
    limit: int,
    worker: str,
    owner: int | None,
    lease_seconds: float,
    start: StartNow | None = None,
) -> tuple[str, list[object]]:
    """The ``UPDATE … RETURNING`` that reserves up to ``limit`` ready messages from ``queues``
    (highest priority first, then oldest), marking started those ``start`` says, as
    ``(sql, params)``; its rows are read with :func:`claimed_from_rows`. :func:`claim` runs it
    alone, :mod:`djqueue.rounds` with the rest of a worker's round.
    """
    kind = vendor(using)
    ops = connections[using].ops
    lease_until = ops.adapt_datetimefield_value(
        timezone.now() + datetime.timedelta(seconds=lease_seconds))
    postgres = kind == "postgresql"
    now_sql, now_params = ("now()", []) if postgres else ("%s", [_now_param(using)])
    if postgres:
        # Per queue, so each reads the partial index in its order and stops after ``limit``
        # rows: ``queue = ANY(...)`` would read and sort every waiting row instead.
        pick = (
            f"SELECT m.id, m.task_name, row_number() OVER (ORDER BY m.priority DESC, m.id) AS rn "
            f"FROM unnest(%s::text[]) AS q(name) CROSS JOIN LATERAL (SELECT id, priority, "
            f"task_name FROM {TABLE} WHERE state = 'ready' AND queue = q.name "
            "AND available_at <= now() ORDER BY priority DESC, id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) AS m ORDER BY m.priority DESC, m.id LIMIT %s"
        )
        pick_params: list[object] = [list(queues), limit, limit]
    else:
        marks = ", ".join(["%s"] * len(queues))
        pick = (
            f"SELECT id, task_name, row_number() OVER (ORDER BY priority DESC, id) AS rn "
            f"FROM {TABLE} WHERE state = 'ready' AND queue IN ({marks}) AND available_at <= %s "
            "ORDER BY priority DESC, id LIMIT %s"
        )
        pick_params = [*queues, _now_param(using), limit]
    go, go_params = _starts_now(postgres, start)
    late, late_params = _among(postgres, "c.task_name", start.acks_late_names if start else ())
    sql = (
        f"UPDATE {TABLE} SET worker = %s, owner = %s, lease_until = %s, "
        f"state = CASE WHEN {go} THEN 'started' ELSE 'reserved' END, "
        f"started_at = CASE WHEN {go} THEN {now_sql} ELSE NULL END, "
        f"acks_late = ({go}) AND {late} "
        f"FROM ({pick}) AS c WHERE {TABLE}.id = c.id "
        f"RETURNING {TABLE}.id, {TABLE}.task_id, {TABLE}.task_name, queue, priority, "
        "content_type, body, retries, time_limit, soft_time_limit, "
        f"(expires IS NOT NULL AND expires <= {now_sql}), "
        f"EXISTS (SELECT 1 FROM {REVOKED_TABLE} r WHERE r.task_id = {TABLE}.task_id), "
        f"{TABLE}.state = 'started'"
    )
    params = [worker, owner, lease_until, *go_params, *go_params, *now_params, *go_params,
              *late_params, *pick_params, *now_params]
    return sql, params


def _among(postgres: bool, column: str, names: Sequence[str]) -> tuple[str, list[object]]:
    if not names:
        return "FALSE", []
    if postgres:
        return f"{column} = ANY(%s::text[])", [list(names)]
    return f"{column} IN ({', '.join(['%s'] * len(names))})", list(names)


def _starts_now(postgres: bool, start: StartNow | None) -> tuple[str, list[object]]:
    """The SQL condition (on the claim's ranked rows ``c``) for "mark this one started now"."""
    if not start:
        return "FALSE", []
    known, known_params = _among(postgres, "c.task_name", start.names)
    short, short_params = _among(postgres, "c.task_name", start.short_names)
    return (f"((c.rn <= %s AND {known}) OR (c.rn <= %s AND {short}))",
            [start.idle, *known_params, start.idle + start.queued, *short_params])


def claimed_from_rows(rows: Sequence[Sequence[object]]) -> list[Claimed]:
    """Claimed messages from the rows of :func:`claim_statement`, in the order to start them
    (RETURNING gives no order)."""
    claimed = [Claimed(*row[:10], expired=bool(row[10]), revoked=bool(row[11]),  # type: ignore[arg-type]
                       started=bool(row[12])) for row in rows]
    claimed.sort(key=lambda m: (-m.priority, m.id))
    return claimed


def claim(
    using: str,
    queues: Sequence[str],
    limit: int,
    worker: str,
    owner: int | None,
    lease_seconds: float,
    start: StartNow | None = None,
) -> list[Claimed]:
    """Reserve up to ``limit`` ready messages from ``queues``: highest priority first, then oldest.

    Each row comes back flagged when it has expired or its task id was revoked, so the worker can
    settle it without running it, and when the claim marked it started (``start``).
    """
    if limit <= 0 or not queues:
        return []
    sql, params = claim_statement(using, queues, limit, worker, owner, lease_seconds, start)

    def run() -> list[Claimed]:
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return claimed_from_rows(cursor.fetchall())

    return retry_if_locked(using, run)


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
        [_now_param(using), *flag_params, *params, *mine_params],
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
    now = _now_param(using)
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
        [_now_param(using), *params],
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
        now = _now_param(using)
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
