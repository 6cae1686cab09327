"""The broker on MySQL (8.0+) and MariaDB (10.6+): every statement of djqueue that is theirs.

- The clock is the database's, ``UTC_TIMESTAMP(6)``, where Django stores UTC there (``USE_TZ``
  with no ``TIME_ZONE`` in the database's settings, Django's default); otherwise the worker's.
- djqueue's own transactions run in ``READ COMMITTED``: under MySQL's default ``REPEATABLE
  READ`` a claim's locking read also takes gap locks, which hold up publishers and let claims
  deadlock. Django opens MySQL connections in ``READ COMMITTED`` unless ``OPTIONS`` say
  otherwise; then djqueue asks for it per transaction (``SET TRANSACTION``) and a prefork
  worker's own sessions keep it, so the project's choice holds for its own transactions.
  Deadlocks (1213) and lock wait timeouts (1205) run djqueue's own transactions again.
- Neither has ``UPDATE … RETURNING`` (MariaDB has ``DELETE … RETURNING``, MySQL not even that).
  A settling statement (start, ack, give back, reject, retry, a chord's count) is sent as
  ``SELECT <returned columns> … FOR UPDATE; UPDATE|DELETE …`` with the same condition, in one
  round trip: the lock makes the second statement move exactly the rows the first returned. The heartbeat's
  statements skip locked rows (``FOR UPDATE SKIP LOCKED``), then update them by id.
- The claim, in one transaction: ``SELECT … ORDER BY priority DESC, id LIMIT n FOR UPDATE SKIP
  LOCKED`` per queue (one round trip for all), then one for the updates and the revoked ids.
- Publishing and results: :mod:`~djqueue.broker.mysql_writing`. No ``LISTEN``: idle workers
  poll. No vacuum.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import OperationalError, connections, transaction
from django.db.backends.signals import connection_created

from .base import DUE_LOOKBACK
from .mysql_writing import MySQLWriting
from .rows import REVOKED_TABLE, TABLE, Claimed, StartNow, claimed_from_rows

logger = logging.getLogger("djqueue.broker")

T = TypeVar("T")

#: Errors after which MySQL has rolled back (1213) or may roll back (1205) the transaction, so
#: djqueue's own transaction is run again from the start.
RETRIED = {1213: "deadlock", 1205: "lock wait timeout"}
#: Marks the condition of a statement that skips locked rows (see ``unlocked``).
_SKIP = "/* djqueue: skip locked */"
#: A statement of :class:`~djqueue.broker.statements.Statements` (the message or chord table).
_SETTLING = re.compile(
    r"^(?:UPDATE (?P<updated>\w+) SET (?P<sets>.+?)|DELETE FROM (?P<deleted>\w+)) "
    r"WHERE (?P<where>.+?)(?: RETURNING (?P<returning>.+))?$", re.S)
#: What a claim reads per message: the first fields of :class:`Claimed`.
_PICKED = ("id, task_id, task_name, queue, priority, content_type, body, retries, deliveries, "
           "time_limit, soft_time_limit")


class MySQLOperations(MySQLWriting):
    vendor = "mysql"
    #: No ``NOTIFY``: an idle worker looks every 0.2 s (an index probe, see :meth:`claim`), so a
    #: message sent to an idle worker starts 0.1 s later on average, 0.2 s at most.
    polling_interval = 0.2

    def __init__(self, using: str) -> None:
        super().__init__(using)
        self._steered: tuple[int, frozenset[str]] | None = None

    # The clock and the hooks of the shared statements.

    def _database_clock(self) -> bool:
        connection = connections[self.using]
        return connection.timezone is not None and connection.timezone_name == "UTC"

    def now_sql(self) -> tuple[str, list[object]]:
        return ("UTC_TIMESTAMP(6)", []) if self._database_clock() else ("%s", [self.now_param()])

    def lease_sql(self, seconds: float) -> tuple[str, list[object]]:
        now, params = self.now_sql()
        return f"{now} + INTERVAL %s MICROSECOND", [*params, round(seconds * 1_000_000)]

    def concat(self, *parts: str) -> str:
        return f"CONCAT({', '.join(parts)})"

    def unlocked(self, condition: str) -> str:
        return f"{condition} {_SKIP}"

    def retrying(self, operation: Callable[[], T], attempts: int = 20) -> T:
        """Run ``operation`` (djqueue's own transaction, or one statement) in ``READ COMMITTED``,
        again after a deadlock or a lock wait timeout. Inside a transaction that is not
        djqueue's alone, once: only the caller can run its transaction again."""
        connection = connections[self.using]
        if connection.in_atomic_block:
            return operation()
        delay = 0.005
        for attempt in range(attempts):
            self._read_committed_next()
            try:
                return operation()
            except OperationalError as exc:
                code = exc.args[0] if exc.args else None
                if code not in RETRIED or attempt == attempts - 1:
                    raise
                logger.debug("MySQL %s; running the transaction again in %.3fs",
                             RETRIED[code], delay)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

    def _read_committed_next(self) -> None:
        """``SET TRANSACTION ISOLATION LEVEL READ COMMITTED`` for the next transaction, unless
        the session already has it (Django's default, or a steered worker session)."""
        connection = connections[self.using]
        connection.ensure_connection()
        if connection.isolation_level == "read committed" or self._is_steered():
            return
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")

    def _is_steered(self) -> bool:
        return (self._steered is not None and self._steered[0] == os.getpid()
                and threading.current_thread().name in self._steered[1])

    def steer_worker_planner(self, threads: Sequence[str]) -> None:
        """Sessions that ``threads`` (names) of this process open from now on run in ``READ
        COMMITTED``: they run only djqueue's statements (the prefork pool's main process)."""
        pid = os.getpid()
        self._steered = (pid, frozenset(threads))

        def steer(sender: Any, connection: Any, **kwargs: Any) -> None:
            if (connection.vendor == "mysql" and connection.alias == self.using
                    and self._is_steered() and connection.isolation_level != "read committed"):
                with connection.cursor() as cursor:
                    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

        connection_created.connect(steer, weak=False,
                                   dispatch_uid=f"djqueue.broker.mysql.steer.{pid}.{self.using}")
        connections.close_all()  # those already open reconnect with the setting

    # The shared statements without RETURNING.

    def _update(self, sql: str, params: list[object]) -> int:
        return self._settle(sql, params)[1]

    def _returning(self, sql: str, params: list[object]) -> list[tuple[object, ...]]:
        return self._settle(sql, params)[0]

    def _settle(self, sql: str, params: list[object]) -> tuple[list[tuple[object, ...]], int]:
        """Run one of the shared statements on the message table: its ``RETURNING`` rows (read
        under a row lock just before the change, so a statement may return only columns it
        does not change) and the count of rows it changed."""
        match = _SETTLING.match(sql)
        skip = _SKIP in sql
        connection = connections[self.using]
        if match is None or not (match["returning"] or skip):
            def plain() -> tuple[list[tuple[object, ...]], int]:
                with connection.cursor() as cursor:
                    cursor.execute(sql, params)
                    return [], cursor.rowcount

            return self.retrying(plain)
        sets, where, returning = match["sets"], match["where"], match["returning"]
        table = match["updated"] or match["deleted"]
        counted = sets.count("%s") if sets else 0
        set_params, where_params = params[:counted], params[counted:]
        head = sql[: match.start("where") - len(" WHERE ")]
        change = sql[: match.end("where")]

        def locked() -> tuple[list[tuple[object, ...]], int]:
            with transaction.atomic(using=self.using, savepoint=False), \
                    connection.cursor() as cursor:
                if not skip:
                    cursor.execute(f"SELECT {returning} FROM {table} WHERE {where} FOR UPDATE; "
                                   f"{change}", [*where_params, *params])
                    rows = [tuple(row) for row in cursor.fetchall()]
                    return rows, _next_result(connection, cursor)
                picked = f"id, {returning}" if returning else "id"
                cursor.execute(f"SELECT {picked} FROM {table} WHERE {where} FOR UPDATE SKIP LOCKED",
                               where_params)
                rows = cursor.fetchall()
                if not rows:
                    return [], 0
                ids, marks = [row[0] for row in rows], ", ".join(["%s"] * len(rows))
                cursor.execute(f"{head} WHERE id IN ({marks})", [*set_params, *ids])
                return [tuple(row[1:]) for row in rows], cursor.rowcount

        return self.retrying(locked)

    def count_down_chord(self, chord_id: str, finished: int, failure: str) -> int | None:
        """The shared statement returns ``pending`` after the change; here it is read (locked)
        just before, so the count left is that less ``finished``."""
        before = super().count_down_chord(chord_id, finished, failure)
        return None if before is None else before - finished

    # The claim.

    def claim(
        self, queues: Sequence[str], limit: int, worker: str, owner: int | None,
        lease_seconds: float, start: StartNow | None = None,
    ) -> list[Claimed]:
        """Two round trips in one transaction: the picked rows of every queue, locked (each
        queue read in its index's order, stopping after ``limit`` rows); then the updates that
        start or reserve them and the revoked task ids among them. Outside a worker's round, a
        look without locks first (:meth:`_any_ready`)."""
        if limit <= 0 or not queues or not self._any_ready(queues):
            return []
        return self.retrying(lambda: self._claim_in_transaction(
            queues, limit, worker, owner, lease_seconds, start))

    def _any_ready(self, queues: Sequence[str]) -> bool:
        """Outside a transaction (an idle worker's poll), whether any message is ready: one
        statement, without the claim transaction's three round trips when there is none."""
        connection = connections[self.using]
        if connection.in_atomic_block:
            return True
        now, now_params = self.now_sql()
        marks = ", ".join(["%s"] * len(queues))
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {TABLE} WHERE state = 'ready' AND queue IN ({marks}) "
                           f"AND available_at <= {now} LIMIT 1", [*queues, *now_params])
            return cursor.fetchone() is not None

    def _claim_in_transaction(
        self, queues: Sequence[str], limit: int, worker: str, owner: int | None,
        lease_seconds: float, start: StartNow | None,
    ) -> list[Claimed]:
        connection = connections[self.using]
        now, now_params = self.now_sql()
        pick = (f"SELECT {_PICKED}, (expires IS NOT NULL AND expires <= {now}) FROM {TABLE} "
                f"WHERE state = 'ready' AND queue = %s AND available_at <= {now} "
                "ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED")
        with transaction.atomic(using=self.using, savepoint=False), connection.cursor() as cursor:
            cursor.execute("; ".join([pick] * len(queues)), [
                p for queue in queues for p in (*now_params, queue, *now_params, limit)])
            rows = list(cursor.fetchall())
            while _more(connection, cursor):
                rows.extend(cursor.fetchall())
            if not rows:
                return []
            # By id: a queue named twice would find its rows again (its own locks do not skip).
            rows = sorted({r[0]: r for r in rows}.values(), key=lambda r: (-r[4], r[0]))[:limit]
            go = [_starts(start, rank, row[2]) for rank, row in enumerate(rows, 1)]
            late = {row[0] for row, now_too in zip(rows, go)
                    if now_too and start and row[2] in start.acks_late_names}
            begun = [row[0] for row, now_too in zip(rows, go) if now_too]
            kept = [row[0] for row, now_too in zip(rows, go) if not now_too]
            task_ids = [row[1] for row in rows]
            statements = [f"SELECT task_id FROM {REVOKED_TABLE} WHERE task_id IN "
                          f"({', '.join(['%s'] * len(task_ids))})"]
            params: list[object] = list(task_ids)
            lease, lease_params = self.lease_sql(lease_seconds)
            holder = f"UPDATE {TABLE} SET worker = %s, owner = %s, lease_until = {lease}, "
            if begun:
                flag, flag_params = (("TRUE", []) if len(late) == len(begun) else
                                     ("FALSE", []) if not late else self._ids(sorted(late)))
                where, where_params = self._ids(begun)
                statements.append(f"{holder}state = 'started', started_at = {now}, "
                                  f"deliveries = deliveries + 1, acks_late = {flag} WHERE {where}")
                params += [worker, owner, *lease_params, *now_params, *flag_params, *where_params]
            if kept:
                where, where_params = self._ids(kept)
                statements.append(f"{holder}state = 'reserved', started_at = NULL, "
                                  f"acks_late = FALSE WHERE {where}")
                params += [worker, owner, *lease_params, *where_params]
            cursor.execute("; ".join(statements), params)
            revoked = {row[0] for row in cursor.fetchall()}
            while _more(connection, cursor):
                pass
        return claimed_from_rows([
            (*row[:8], row[8] + now_too, *row[9:12], row[1] in revoked, now_too)
            for row, now_too in zip(rows, go)])

    def next_due(self, queues: Sequence[str]) -> float | None:
        if not queues:
            return None
        now, now_params = self.now_sql()
        since, since_params = self.lease_sql(-DUE_LOOKBACK)
        marks = ", ".join(["%s"] * len(queues))
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                f"SELECT TIMESTAMPDIFF(MICROSECOND, {now}, MIN(available_at)) FROM {TABLE} "
                f"WHERE state = 'ready' AND queue IN ({marks}) AND available_at > {since}",
                [*now_params, *queues, *since_params])
            (micros,) = cursor.fetchone()
        return None if micros is None else max(int(micros) / 1_000_000, 0.0)


def _starts(start: StartNow | None, rank: int, name: str) -> bool:
    """Whether the claim marks started its ``rank``-th row (1 first), of task ``name``: as
    :meth:`~djqueue.broker.base.Operations._starts_now` says in SQL."""
    if not start:
        return False
    return ((rank <= start.idle and name in start.names)
            or (rank <= start.idle + start.queued and name in start.short_names))


def _more(connection: Any, cursor: Any) -> bool:
    """Move to the next result of a call of several statements; False after the last. An error
    of a later statement surfaces here, as Django's."""
    with connection.wrap_database_errors:
        return bool(cursor.nextset())


def _next_result(connection: Any, cursor: Any) -> int:
    """The row count of the second statement of a call."""
    _more(connection, cursor)
    count = cursor.rowcount
    while _more(connection, cursor):
        pass
    return count
