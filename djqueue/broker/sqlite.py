"""The broker on SQLite: every statement of djqueue that is SQLite's own.

- The clock is the worker's, passed as a parameter: SQLite's workers share one host.
- Several ids are a list of placeholders; statements run on Django's cursor.
- SQLite's single write lock makes each statement atomic: the claim is one
  ``WITH c AS (SELECT … LIMIT n) UPDATE … FROM c RETURNING …``, so two workers never take one row,
  and there are no row locks to skip. "database is locked" is retried
  (:meth:`SQLiteOperations.retrying`).
- SQLite keeps whatever bytes SQL from outside djqueue writes into a text column, and sqlite3
  failed the whole claim on a row that is not valid UTF-8, at every poll; so the claim returns its
  text columns as bytes, decoded here, and such a row is set aside in the claim's transaction.
- No ``LISTEN``: workers poll. A round is a transaction of a few statements (statements cost no
  network round trip, only the commit counts). No vacuum from workers.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import OperationalError, connections, transaction
from django.utils import timezone

from .base import CLAIM_FLAGS, DUE_LOOKBACK, Operations
from .rows import (
    RESULT_COLUMNS, RESULT_UPDATED, RESULTS_TABLE, TABLE, Claimed, MessageHead, NewMessage,
    StartNow, adapted, claimed_from_rows, insert_sql, results_document, row_tail,
)

if TYPE_CHECKING:
    from ..backends.base import ResultRecord

logger = logging.getLogger("djqueue.broker")

T = TypeVar("T")

#: The claim's ``RETURNING``: the text columns as bytes, which :meth:`SQLiteOperations._decoded`
#: decodes. ``queue`` is not among them: the claim matched it byte for byte with one of the
#: worker's queue names.
_RETURNING = (
    f"RETURNING {TABLE}.id, CAST({TABLE}.task_id AS BLOB), CAST({TABLE}.task_name AS BLOB), "
    "queue, priority, CAST(content_type AS BLOB), CAST(body AS BLOB), retries, deliveries, "
    "time_limit, soft_time_limit, " + CLAIM_FLAGS.format(now="%s")
)
#: Where those are in a row, and their columns.
_TEXT_FIELDS = ((1, "task_id"), (2, "task_name"), (5, "content_type"), (6, "body"))


class SQLiteOperations(Operations):
    vendor = "sqlite"

    def now_sql(self) -> tuple[str, list[object]]:
        return "%s", [self.now_param()]

    def lease_sql(self, seconds: float) -> tuple[str, list[object]]:
        until = timezone.now() + datetime.timedelta(seconds=seconds)
        return "%s", [connections[self.using].ops.adapt_datetimefield_value(until)]

    def retrying(self, operation: Callable[[], T], attempts: int = 50) -> T:
        """Retry "database is locked" with a growing pause. The busy timeout already waits
        inside SQLite; this covers the cases where SQLite gives up at once instead (a write lock
        that cannot be upgraded) or the timeout ran out under load."""
        delay = 0.005
        for attempt in range(attempts):
            try:
                return operation()
            except OperationalError as exc:
                locked = "locked" in str(exc)
                if (not locked or attempt == attempts - 1
                        or not connections[self.using].get_autocommit()):
                    raise
                logger.debug("SQLite database is locked; retrying in %.3fs", delay)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

    # The claim.

    def _claim(
        self, queues: Sequence[str], limit: int, worker: str, owner: int | None,
        lease_seconds: float, start: StartNow | None, confirm: str | None,
    ) -> tuple[str, list[object]]:
        assert confirm is None, "SQLite sends a round as a transaction, not one statement"
        # One write lock for the whole statement: no other worker sees these rows as ready.
        marks = ", ".join(["%s"] * len(queues))
        now = self.now_param()
        _, (lease_until,) = self.lease_sql(lease_seconds)
        go, go_params = self._starts_now(start, "c.rn", "c.task_name")
        late, late_params = self._among("c.task_name", start.acks_late_names if start else ())
        sql = (
            f"c AS (SELECT id, task_name, row_number() OVER (ORDER BY priority DESC, id) AS rn "
            f"FROM {TABLE} WHERE state = 'ready' AND queue IN ({marks}) AND available_at <= %s "
            "ORDER BY priority DESC, id LIMIT %s) "
            f"UPDATE {TABLE} SET worker = %s, owner = %s, lease_until = %s, "
            f"state = CASE WHEN {go} THEN 'started' ELSE 'reserved' END, "
            f"started_at = CASE WHEN {go} THEN %s ELSE NULL END, "
            f"deliveries = deliveries + CASE WHEN {go} THEN 1 ELSE 0 END, "
            f"acks_late = ({go}) AND {late} "
            f"FROM c WHERE {TABLE}.id = c.id " + _RETURNING
        )
        params = [*queues, now, limit, worker, owner, lease_until, *go_params, *go_params, now,
                  *go_params, *go_params, *late_params, now]
        return sql, params

    def _claimed(self, sql: str, params: list[object], owner: int | None) -> list[Claimed]:
        # One transaction with what _decoded sets aside: rows claimed but not handed back
        # would wait for their lease to run out.
        with transaction.atomic(using=self.using, savepoint=False):
            return self._decoded(self.execute(sql, params, fetch=True), owner)

    def _decoded(self, rows: Sequence[Sequence[object]], owner: int | None) -> list[Claimed]:
        """Claimed messages from the claim's rows, whose text columns are bytes.

        A message whose text is not valid UTF-8 is set aside at once, its text stored again
        decoded with U+FFFD in place of the invalid bytes (in the same statement: it never runs
        in that shape), so that the admin can show it; it comes back ``unreadable``, for the
        worker to fail its task with the reason.
        """
        decoded, unreadable = [], {}
        for row in rows:
            values = list(row)
            invalid: dict[str, str] = {}
            for index, column in _TEXT_FIELDS:
                raw: bytes = values[index]  # type: ignore[assignment]
                try:
                    values[index] = raw.decode()
                except UnicodeDecodeError:
                    values[index] = invalid[column] = raw.decode(errors="replace")
            if invalid:
                which = " and ".join(invalid)
                reason = (f"{which} {'is' if len(invalid) == 1 else 'are'} not valid UTF-8 "
                          "(stored again with U+FFFD in place of the invalid bytes, to be shown)")
                self.set_aside_unreadable(values[0], reason, invalid, owner)  # type: ignore[arg-type]
                unreadable[values[0]] = reason
            decoded.append(values)
        claimed = claimed_from_rows(decoded)
        if unreadable:
            for message in claimed:
                message.unreadable = unreadable.get(message.id, "")
        return claimed

    def next_due(self, queues: Sequence[str]) -> float | None:
        if not queues:
            return None
        marks = ", ".join(["%s"] * len(queues))
        since, since_params = self.lease_sql(-DUE_LOOKBACK)
        sql = (
            f"SELECT (julianday(min(available_at)) - julianday(%s)) * 86400.0 FROM {TABLE} "
            f"WHERE state = 'ready' AND queue IN ({marks}) AND available_at > {since}"
        )
        params = [self.now_param(), *queues, *since_params]

        def run() -> float | None:
            with connections[self.using].cursor() as cursor:
                cursor.execute(sql, params)
                (seconds,) = cursor.fetchone()
            return None if seconds is None else max(float(seconds), 0.0)

        return self.retrying(run)

    # Publishing and results.

    def publish_one(self, message: NewMessage, now: datetime.datetime) -> None:
        connection = connections[self.using]
        row = (message.task_id, message.body, *adapted(row_tail(message.head, now), connection))
        self.retrying(lambda: self.execute(insert_sql(), row))

    def publish_many(self, messages: Iterable[NewMessage], now: datetime.datetime) -> None:
        """One ``executemany`` of the ``INSERT``, in one transaction (the caller's, when there is
        one)."""
        connection = connections[self.using]
        tails: dict[MessageHead, tuple[Any, ...]] = {}  # one adaptation per head, not per row
        rows = []
        for task_id, body, head in messages:
            tail = tails.get(head)
            if tail is None:
                tail = tails[head] = adapted(row_tail(head, now), connection)
            rows.append((task_id, body, *tail))

        def run() -> None:
            with transaction.atomic(using=self.using, savepoint=False), \
                    connection.cursor() as cursor:
                cursor.executemany(insert_sql(), rows)

        self.retrying(run)

    def results_upsert(
        self, records: Sequence[ResultRecord], only: str | None = None
    ) -> tuple[str, list[object]]:
        assert only is None, "SQLite stores results in a transaction, not one statement"
        as_text = connections[self.using].ops.adapt_datetimefield_value
        document = results_document(records, as_text)
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(RESULT_COLUMNS)))
        updates = ", ".join(f"{c} = excluded.{c}" for c in RESULT_UPDATED)
        # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT's join.
        sql = (
            f"INSERT INTO {RESULTS_TABLE} ({', '.join(RESULT_COLUMNS)}, date_created) "
            f"SELECT {picks}, %s FROM json_each(%s) WHERE true "
            f"ON CONFLICT (task_id) DO UPDATE SET {updates}"
        )
        return sql, [as_text(timezone.now()), document]

