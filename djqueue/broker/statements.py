"""The statements that move held messages, the same on every database: start, ack, requeue,
defer, retry, reject, recover, purge, restore, revocations, lease extension (start and ack also
as ``(sql, params)`` builders, for the round); those of workflows' rows are in
:mod:`.workflow_statements`.

They are written once, with the hooks declared here, which each vendor module implements: how to
say "``id`` is one of these" (:meth:`Statements.one_of`: one array parameter on PostgreSQL, so a
statement keeps one text whatever the number and is prepared once), the clock that leases and
starts use (:meth:`~Statements.now_sql`, :meth:`~Statements.lease_sql`), rows the heartbeat skips
because another transaction has locked them (:meth:`~Statements.unlocked`), and what is retried
(:meth:`~Statements.retrying`: SQLite's "database is locked"). The claim, publishing and the
rest of a vendor's interface are in :class:`djqueue.broker.base.Operations`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from django.db import connections
from django.utils import timezone

from .rows import LOST_ERROR, LOST_ERROR_REPEATED, REVOKED_TABLE, TABLE, Lost

T = TypeVar("T")


class Statements:
    """The shared statements on one database alias, ``using``, and the hooks they are made of."""

    def __init__(self, using: str) -> None:
        self.using = using

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.using!r}>"

    # Hooks: the pieces of SQL a vendor writes its own way.

    def one_of(self, column: str, values: Sequence[Any], sql_type: str) -> tuple[str, list[object]]:
        """``column`` is one of ``values`` (of SQL type ``sql_type``), as ``(sql, params)``: by
        default a list of placeholders."""
        return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)

    def now_sql(self) -> tuple[str, list[object]]:
        """The current time for a lease or a start, as ``(sql, params)``, on a clock every worker
        of this database agrees on, so hosts whose clocks disagree still agree on whose lease has
        run out."""
        raise NotImplementedError

    def lease_sql(self, seconds: float) -> tuple[str, list[object]]:
        """``now + seconds`` on the clock of :meth:`now_sql`, as ``(sql, params)``."""
        raise NotImplementedError

    def unlocked(self, condition: str) -> str:
        """The rows that match ``condition``, skipping those another transaction has locked, so
        that the heartbeat never waits for, or deadlocks with, a worker's round that is moving
        those rows (it settles or renews them itself). By default: ``condition``."""
        return condition

    def concat(self, *parts: str) -> str:
        """SQL that joins the text expressions ``parts``: ``||`` by default (MySQL reads it as
        OR)."""
        return " || ".join(parts)

    def retrying(self, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying when the database asks for it. By default: once."""
        return operation()

    def now_param(self) -> object:
        """The current time as the database driver wants it."""
        return connections[self.using].ops.adapt_datetimefield_value(timezone.now())

    # Running them.

    def _ids(self, ids: Sequence[int]) -> tuple[str, list[object]]:
        return self.one_of("id", ids, "bigint")

    @staticmethod
    def _owned(owner: int | None) -> tuple[str, list[object]]:
        """Only rows this worker process still holds: after a recovery gave a message to another
        worker, a late acknowledgement from the old holder must not touch it."""
        return (" AND owner = %s", [owner]) if owner is not None else ("", [])

    def _held(self, condition: str) -> str:
        """``id`` among the held messages that match ``condition``, as :meth:`unlocked` has it."""
        return self.unlocked(f"state IN ('reserved', 'started') AND {condition}")

    def _update(self, sql: str, params: list[object]) -> int:
        def run() -> int:
            with connections[self.using].cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.rowcount

        return self.retrying(run)

    def _returning(self, sql: str, params: list[object]) -> list[tuple[object, ...]]:
        """Run a statement with ``RETURNING``; its rows."""
        def run() -> list[tuple[object, ...]]:
            with connections[self.using].cursor() as cursor:
                cursor.execute(sql, params)
                return [tuple(row) for row in cursor.fetchall()]

        return self.retrying(run)

    # The statements.

    def start_statement(
        self, ids: Sequence[int], acks_late_ids: Sequence[int] = (), owner: int | None = None,
        *, lease_seconds: float,
    ) -> tuple[str, list[object]]:
        """Mark reserved messages as started (handed to the pool), recording their ``acks_late``,
        counting the delivery and renewing the lease. Its rows are ``(id, task_id)`` of the
        messages it started: only those may run. A reserved message this worker no longer holds
        (its lease ran out while the database was away, and another worker recovered it) is not
        among them. One this worker already started is: a round whose commit reached the
        database but whose answer was lost (the connection died) is run again, and its starts
        must still be run, once, with no second delivery counted."""
        where, params = self._ids(ids)
        late = set(acks_late_ids)
        if not late:
            flag, flag_params = "FALSE", []
        elif late >= set(ids):
            flag, flag_params = "TRUE", []
        else:
            late_where, flag_params = self._ids(sorted(late))
            flag = f"({late_where})"
        mine, mine_params = self._owned(owner)
        now, now_params = self.now_sql()
        lease, lease_params = self.lease_sql(lease_seconds)
        held = "state IN ('reserved', 'started')" if owner is not None else "state = 'reserved'"
        # deliveries first: MySQL applies assignments in order, so it must see the old state.
        return (
            f"UPDATE {TABLE} SET deliveries = deliveries + "
            f"CASE WHEN state = 'reserved' THEN 1 ELSE 0 END, state = 'started', "
            f"started_at = {now}, lease_until = {lease}, acks_late = {flag} "
            f"WHERE {where} AND {held}{mine} RETURNING id, task_id",
            [*now_params, *lease_params, *flag_params, *params, *mine_params],
        )

    def start(
        self, ids: Sequence[int], acks_late_ids: Sequence[int] = (), owner: int | None = None,
        *, lease_seconds: float,
    ) -> list[tuple[int, str]]:
        """Run :meth:`start_statement` alone; returns ``(id, task_id)`` of the messages started."""
        if not ids:
            return []
        return self._returning(*self.start_statement(ids, acks_late_ids, owner,
                                                     lease_seconds=lease_seconds))

    def ack_statement(self, ids: Sequence[int], owner: int | None = None) -> tuple[str, list[object]]:
        """Acknowledge finished messages: they leave the table. Its rows are the task ids of the
        messages it deleted: an outcome is stored only for a message its worker still held."""
        where, params = self._ids(ids)
        mine, mine_params = self._owned(owner)
        return (f"DELETE FROM {TABLE} WHERE {where}{mine} RETURNING task_id",
                [*params, *mine_params])

    def ack(self, ids: Sequence[int], owner: int | None = None) -> list[str]:
        """Run :meth:`ack_statement` alone; returns the task ids of the messages deleted."""
        if not ids:
            return []
        return [row[0] for row in self._returning(*self.ack_statement(ids, owner))]

    def requeue(self, ids: Sequence[int], owner: int | None = None) -> list[str]:
        """Hand held messages (reserved, or started with ``acks_late``) back to the queue.
        Returns the task ids of those this worker still held."""
        return self._give_back(ids, owner, "")

    def unstart(self, ids: Sequence[int], owner: int | None = None) -> list[str]:
        """Like :meth:`requeue`, for started messages that never began: their start is not
        counted as a delivery (:data:`DJQUEUE_MAX_DELIVERIES`)."""
        return self._give_back(ids, owner, "deliveries = CASE WHEN state = 'started' AND "
                               "deliveries > 0 THEN deliveries - 1 ELSE deliveries END, ")

    def _give_back(self, ids: Sequence[int], owner: int | None, also: str) -> list[str]:
        if not ids:
            return []
        where, params = self._ids(ids)
        mine, mine_params = self._owned(owner)
        return [row[0] for row in self._returning(
            # ``also`` first: MySQL applies the assignments in order, so a CASE after
            # ``state = 'ready'`` would read the new state.
            f"UPDATE {TABLE} SET {also}state = 'ready', worker = '', owner = NULL, "
            f"lease_until = NULL, started_at = NULL WHERE "
            f"{where} AND state IN ('reserved', 'started'){mine} RETURNING task_id",
            [*params, *mine_params],
        )]

    def defer(self, ids: Sequence[int], seconds: float, owner: int | None = None) -> int:
        """Hand reserved (not started) messages back to the queue, not to be claimed for
        ``seconds``. Rate-limited messages wait this way: in the table, visible to every worker,
        not in memory."""
        if not ids:
            return 0
        where, params = self._ids(ids)
        mine, mine_params = self._owned(owner)
        until = timezone.now() + datetime.timedelta(seconds=seconds)
        return self._update(
            f"UPDATE {TABLE} SET state = 'ready', worker = '', owner = NULL, lease_until = NULL, "
            f"available_at = %s WHERE {where} AND state = 'reserved'{mine}",
            [connections[self.using].ops.adapt_datetimefield_value(until), *params, *mine_params],
        )

    def retry(
        self, message_id: int, available_at: datetime.datetime, body: str | None,
        owner: int | None = None,
    ) -> list[str]:
        """Put a message back for its next attempt at ``available_at`` (``Task.retry``); the next
        attempt counts its deliveries afresh. Returns its task id if this worker still held it."""
        ops = connections[self.using].ops
        sets = "state = 'ready', worker = '', owner = NULL, lease_until = NULL, started_at = NULL, "
        sets += "retries = retries + 1, deliveries = 0, available_at = %s"
        params: list[object] = [ops.adapt_datetimefield_value(available_at)]
        if body is not None:
            sets += ", body = %s"
            params.append(body)
        mine, mine_params = self._owned(owner)
        return [row[0] for row in self._returning(
            f"UPDATE {TABLE} SET {sets} WHERE id = %s{mine} RETURNING task_id",
            [*params, message_id, *mine_params])]

    def extend_leases(self, owner: int, ids: Sequence[int], lease_seconds: float) -> int:
        """The heartbeat: keep holding the messages ``ids``, those this worker process knows it
        holds, not every row with its ``owner``: a claim that committed while its answer was
        lost (the connection died) left rows with this owner that the worker never learned of.
        Those must run out their lease and be recovered, not be kept for ever."""
        if not ids:
            return 0
        lease, lease_params = self.lease_sql(lease_seconds)
        where, params = self._ids(ids)
        held = self._held(f"{where} AND owner = %s")
        return self._update(f"UPDATE {TABLE} SET lease_until = {lease} WHERE {held}",
                            [*lease_params, *params, owner])

    def recover_expired_leases(self, max_deliveries: int | None = None) -> list[Lost]:
        """Settle the messages of workers whose heartbeat stopped (their lease ran out).

        Reserved messages, and started ones with ``acks_late`` started fewer than
        ``max_deliveries`` times, go back to the queue; other started ones are set aside (state
        ``rejected``, no owner: a late outcome from the lost worker changes nothing) and returned
        so the caller can record ``WorkerLostError``. Leases are compared on the clock of
        :meth:`now_sql`. Each statement moves a row at most once, so several workers recovering
        at the same moment cannot settle a message twice.
        """
        now, now_params = self.now_sql()
        expired = f"lease_until < {now}"
        if max_deliveries:
            again, again_params = "(state = 'reserved' OR (acks_late AND deliveries < %s))", [
                max_deliveries]
        else:
            again, again_params = "(state = 'reserved' OR acks_late)", []
        self._update(
            f"UPDATE {TABLE} SET state = 'ready', worker = '', owner = NULL, lease_until = NULL, "
            f"started_at = NULL WHERE {self._held(f'{expired} AND {again}')}",
            [*now_params, *again_params],
        )
        lost = self._held(f"state = 'started' AND {expired}")
        repeated = self.concat("%s", "CAST(deliveries AS CHAR(10))", "' times'")
        rows = self._returning(
            f"UPDATE {TABLE} SET state = 'rejected', owner = NULL, lease_until = NULL, error = "
            f"CASE WHEN acks_late THEN {repeated} ELSE %s END "
            f"WHERE {lost} RETURNING task_id, task_name, worker, queue, acks_late, deliveries, "
            "content_type, body",
            [LOST_ERROR_REPEATED, LOST_ERROR, *now_params],
        )
        return [Lost(str(r[0]), str(r[1]), str(r[2]), str(r[3]), bool(r[4]), int(r[5]),  # type: ignore[arg-type,call-overload]
                     str(r[6]), str(r[7])) for r in rows]

    def revoked_among(self, task_ids: Sequence[str]) -> dict[str, tuple[bool, str]]:
        """Which of ``task_ids`` are revoked: ``{task_id: (terminate, signal)}``."""
        if not task_ids:
            return {}
        marks = ", ".join(["%s"] * len(task_ids))
        connection = connections[self.using]
        signal = connection.ops.quote_name("signal")  # a reserved word on MySQL
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT task_id, terminate, {signal} FROM {REVOKED_TABLE} "
                f"WHERE task_id IN ({marks})",
                list(task_ids),
            )
            return {row[0]: (bool(row[1]), row[2]) for row in cursor.fetchall()}

    def reject(self, ids: Sequence[int], error: str, owner: int | None = None) -> list[str]:
        """Set messages aside that cannot run here (unknown task, undecodable body, lost too
        often). They stay in the table, visible in the admin, and are never claimed again unless
        re-enqueued. Returns the task ids of those this worker still held."""
        if not ids:
            return []
        where, params = self._ids(ids)
        mine, mine_params = self._owned(owner)
        return [row[0] for row in self._returning(
            f"UPDATE {TABLE} SET state = 'rejected', lease_until = NULL, error = %s "
            f"WHERE {where}{mine} RETURNING task_id",
            [error, *params, *mine_params],
        )]

    def set_aside_unreadable(
        self, message_id: int, error: str, texts: Mapping[str, str], owner: int | None = None
    ) -> None:
        """Set aside a message whose ``texts`` columns are not valid UTF-8 (SQLite keeps any
        bytes), storing them as given (decoded with U+FFFD for the invalid bytes) in the same
        statement."""
        sets = "".join(f", {column} = %s" for column in texts)
        mine, mine_params = self._owned(owner)
        self._update(
            f"UPDATE {TABLE} SET state = 'rejected', lease_until = NULL, error = %s{sets} "
            f"WHERE id = %s{mine}",
            [error, *texts.values(), message_id, *mine_params],
        )

    def purge(self, queues: Sequence[str]) -> int:
        """Delete every waiting message in ``queues``; return how many."""
        if not queues:
            return 0
        marks = ", ".join(["%s"] * len(queues))
        return self._update(
            f"DELETE FROM {TABLE} WHERE state = 'ready' AND queue IN ({marks})", list(queues))

    def restore_rejected(self, ids: Sequence[int]) -> int:
        """Put messages that were set aside (state ``rejected``) back in their queue, to run now."""
        if not ids:
            return 0
        where, params = self._ids(ids)
        return self._update(
            f"UPDATE {TABLE} SET state = 'ready', error = '', worker = '', owner = NULL, "
            f"lease_until = NULL, started_at = NULL, available_at = %s WHERE {where} "
            "AND state = 'rejected'",
            [self.now_param(), *params],
        )
