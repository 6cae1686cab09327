"""The broker on PostgreSQL: every statement and capability of djqueue that is PostgreSQL's own.

- The clock is the database's (``now()``, ``make_interval``): every worker host shares it, so
  hosts whose clocks disagree still agree on whose lease has run out.
- Several ids are one array parameter (``id = ANY(%s::bigint[])``), so a statement keeps one text
  whatever the number, and djqueue's hot statements (publishing, the claim, the worker's round)
  run with server-side parameters, prepared once they have run :data:`PREPARE_AFTER` times on a
  connection (:meth:`PostgreSQLOperations.execute`) — never behind a pooler (:mod:`.pooling`).
- The claim locks its rows with ``FOR UPDATE SKIP LOCKED``: concurrent workers never wait on each
  other nor take the same row; the heartbeat skips rows a round has locked.
- A worker's common round is one statement: data-modifying ``WITH`` queries and the claim
  (:mod:`.postgresql_round`, workflows included).
- Publishing notifies listening workers (``NOTIFY``, delivered at commit, dropped on rollback); a
  batch is one ``COPY``.
- The message table is vacuumed by workers when autovacuum is off or behind.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import (
    DatabaseError, OperationalError, ProgrammingError, connections, transaction,
)
from django.db.backends.signals import connection_created

from . import pooling
from .base import DEAD_ROWS, DUE_LOOKBACK, ListenerLost, ListenerUnavailable
from .postgresql_round import NOTIFY_CHANNEL, RETURNING, PostgreSQLRound
from .rows import (
    RESULT_COLUMNS, RESULT_UPDATED, RESULTS_TABLE, TABLE, Claimed, MessageHead, NewMessage,
    StartNow, claimed_from_rows, insert_sql, results_document, row_plan, row_tail,
)

if TYPE_CHECKING:
    from ..backends.base import ResultRecord

vacuum_logger = logging.getLogger("djqueue.vacuum")

#: Runs of a statement on a connection before it is prepared there: a connection that runs it
#: once (a request with ``CONN_MAX_AGE = 0`` sending one message) pays no extra round trip.
PREPARE_AFTER = 5
#: The channel that carries "a remote-control command was sent" (see :mod:`djqueue.client.control`).
CONTROL_CHANNEL = "djqueue_control"
#: Rows per write of a batch ``COPY`` (see :meth:`PostgreSQLOperations.publish_many`).
COPY_CHUNK = 500
#: PostgreSQL types of the result columns, to read them out of the JSON document.
_PG_TYPES = {"runtime": "float8", "date_done": "timestamptz"}


class PostgreSQLOperations(PostgreSQLRound):
    vendor = "postgresql"
    can_listen = True
    one_statement_rounds = True

    def one_of(self, column: str, values: Sequence[Any], sql_type: str) -> tuple[str, list[object]]:
        return f"{column} = ANY(%s::{sql_type}[])", [list(values)]

    def now_sql(self) -> tuple[str, list[object]]:
        return "now()", []

    def lease_sql(self, seconds: float) -> tuple[str, list[object]]:
        return "now() + make_interval(secs => %s)", [float(seconds)]

    def unlocked(self, condition: str) -> str:
        return f"id IN (SELECT id FROM {TABLE} WHERE {condition} FOR UPDATE SKIP LOCKED)"

    def execute(self, sql: str, params: Sequence[Any], fetch: bool = False) -> list[Any]:
        """Past Django's cursor wrapper, with the parameters bound on the server, prepared once
        run :data:`PREPARE_AFTER` times on a connection: Django binds on the client, so
        PostgreSQL parses and plans every statement anew, and a long parameter (a JSON document
        of rows) is escaped into the SQL text. Still on Django's connection (with its error
        wrapping and broken-transaction check), so in the caller's transaction. Django's own
        cursor whenever something needs to see the statements: query logging (``DEBUG``,
        ``CaptureQueriesContext``) or an ``execute_wrapper``."""
        connection = connections[self.using]
        if connection.queries_logged or connection.execute_wrappers:
            return super().execute(sql, params, fetch)
        import psycopg  # PostgreSQL needs psycopg 3 (the "postgres" extra); SQLite does not

        connection.close_if_health_check_failed()
        connection.ensure_connection()
        connection.validate_thread_sharing()
        connection.validate_no_broken_transaction()
        raw = connection.connection
        pooled = route(connection).pooled
        try:
            with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
                if pooled:
                    cursor.execute(sql, params)
                else:
                    # For this statement only: Django's None stays.
                    raw.prepare_threshold = PREPARE_AFTER
                    try:
                        cursor.execute(sql, params)
                    finally:
                        raw.prepare_threshold = None
                return cursor.fetchall() if fetch else []
        except (OperationalError, ProgrammingError) as exc:
            if pooled or not pooling.clashed(exc):
                raise
            if connection.get_autocommit():  # its statement cache names what the server lacks
                connection.close()
            raise pooling.conflict(self.using, exc) from exc

    def steer_worker_planner(self, threads: Sequence[str]) -> None:
        """From now on, this process's PostgreSQL sessions opened by ``threads`` (names) plan with
        ``enable_seqscan = off``, ``plan_cache_mode = force_generic_plan`` and ``jit = off``;
        not on a pooled alias (:mod:`.pooling`), where session state would reach other clients.

        A prefork worker process runs only djqueue's statements, each answered by an index. A
        queue table's statistics are always out of date, and with them the planner turned claims
        into sequential scans (about 14 ms against 1 ms for 400 rows of 20,000 here). With only
        index scans to choose, a plan per run (``auto`` mode) is the same plan made again, a
        quarter of an idle worker's one-message claim. A generic plan does not know the claim's
        ``LIMIT``: with a million waiting rows its cost passed ``jit_above_cost``, and each claim
        spent 8 ms compiling what runs in 1 ms. Pool children, which run the project's tasks, are
        other processes and are not affected.
        """
        pid = os.getpid()

        def steer(sender: Any, connection: Any, **kwargs: Any) -> None:
            if (connection.vendor == "postgresql" and os.getpid() == pid
                    and threading.current_thread().name in threads
                    and not route(connection).pooled):  # session state would reach others
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('enable_seqscan', 'off', false), "
                                   "set_config('plan_cache_mode', 'force_generic_plan', false), "
                                   "set_config('jit', 'off', false)")

        connection_created.connect(steer, weak=False,
                                   dispatch_uid=f"djqueue.broker.postgresql.steer.{pid}")
        connections.close_all()  # those already open reconnect with the setting

    # The claim and the round.

    def _claim(
        self, queues: Sequence[str], limit: int, worker: str, owner: int | None,
        lease_seconds: float, start: StartNow | None, confirm: str | None,
    ) -> tuple[str, list[object]]:
        # ``c``: the picked rows, locked, each with its rank and whether it starts now; per queue,
        # so each reads the partial index in order and stops after ``limit`` rows (``queue =
        # ANY(...)`` would read and sort every waiting row). Two updates take the rows to start and
        # to reserve, each through the primary key (``id = ANY`` of one array: a join on the id
        # could become a hash join over a sequential scan, 14 ms instead of 1 ms for 400 rows of
        # 20,000). Two keep a row's rank a column of ``c``; one update would have to find each
        # row's position in the array, a quarter of a round for 500 rows.
        go, go_params = self._starts_now(start, "rn", "task_name")
        late, late_params = self._among(f"{TABLE}.task_name",
                                        start.acks_late_names if start else ())
        picked = (
            f"c AS (SELECT id, {go} AS go FROM (SELECT m.id, m.task_name, "
            "row_number() OVER (ORDER BY m.priority DESC, m.id) AS rn "
            "FROM unnest(%s::text[]) AS q(name) CROSS JOIN LATERAL "
            f"(SELECT id, priority, task_name FROM {TABLE} WHERE state = 'ready' "
            "AND queue = q.name AND available_at <= now() ORDER BY priority DESC, id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) AS m ORDER BY m.priority DESC, m.id LIMIT %s) AS p)"
        )
        params: list[object] = [*go_params, list(queues), limit, limit]
        lease = "now() + make_interval(secs => %s)"  # on the database's clock, as every lease
        reserve = (f"UPDATE {TABLE} SET worker = %s, owner = %s, lease_until = {lease}, "
                   "state = 'reserved', started_at = NULL, acks_late = FALSE "
                   "WHERE id = ANY(ARRAY(SELECT id FROM c WHERE NOT go)) " + RETURNING)
        confirmed = f" UNION ALL {confirm}" if confirm else ""
        if not start:
            if not confirm:
                return f"{picked} {reserve}", [*params, worker, owner, float(lease_seconds)]
            return (f"{picked}, r AS ({reserve}) SELECT * FROM r{confirmed}",
                    [*params, worker, owner, float(lease_seconds)])
        begin = (f"UPDATE {TABLE} SET worker = %s, owner = %s, lease_until = {lease}, "
                 f"state = 'started', started_at = now(), deliveries = deliveries + 1, "
                 f"acks_late = {late} WHERE id = ANY(ARRAY(SELECT id FROM c WHERE go)) "
                 + RETURNING)
        sql = (f"{picked}, s AS ({begin}), r AS ({reserve}) "
               f"SELECT * FROM s UNION ALL SELECT * FROM r{confirmed}")
        return sql, [*params, worker, owner, float(lease_seconds), *late_params,
                     worker, owner, float(lease_seconds)]

    def _claimed(self, sql: str, params: list[object], owner: int | None) -> list[Claimed]:
        return claimed_from_rows(self.execute(sql, params, fetch=True))

    def next_due(self, queues: Sequence[str]) -> float | None:
        if not queues:
            return None
        marks = ", ".join(["%s"] * len(queues))
        since, since_params = self.lease_sql(-DUE_LOOKBACK)
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                f"SELECT EXTRACT(EPOCH FROM min(available_at) - now()) FROM {TABLE} "
                f"WHERE state = 'ready' AND queue IN ({marks}) AND available_at > {since}",
                [*queues, *since_params])
            (seconds,) = cursor.fetchone()
        return None if seconds is None else max(float(seconds), 0.0)

    # Publishing and results.

    def publish_one(self, message: NewMessage, now: datetime.datetime) -> None:
        """One statement: ``WITH added AS (INSERT … RETURNING queue) SELECT pg_notify(…)``."""
        self.execute(_notifying_insert(), (message.task_id, message.body,
                                           *row_tail(message.head, now)))

    def publish_many(self, messages: Iterable[NewMessage], now: datetime.datetime) -> None:
        """``COPY`` the rows, then notify every queue written to, in one transaction (the
        caller's, when there is one): workers never see rows they were not woken for, and a
        rollback drops both. The text is built here, with each head's columns formatted once per
        batch, and sent every ``COPY_CHUNK`` rows: PostgreSQL stores those while the next ones
        are built (and, from a ``group``, encoded), so the two processes work side by side."""
        connection = connections[self.using]
        tails: dict[MessageHead, str] = {}
        queues: dict[str, None] = {}
        copy_sql = f"COPY {TABLE} ({', '.join(row_plan().columns)}) FROM STDIN"
        with transaction.atomic(using=self.using, savepoint=False), connection.cursor() as cursor:
            with connection.wrap_database_errors:
                with cursor.copy(copy_sql) as copy:
                    lines = []
                    for task_id, body, head in messages:
                        tail = tails.get(head)
                        if tail is None:
                            fields = map(_copy_field, row_tail(head, now))
                            tail = tails[head] = "\t".join(fields) + "\n"
                            queues[head.queue] = None
                        # Bodies come from djqueue.serialization: ASCII JSON or base64, whose
                        # only character COPY treats specially is the backslash.
                        if "\\" in body:
                            body = body.replace("\\", "\\\\")
                        # A task id the caller chose may hold any character.
                        if "\\" in task_id or not task_id.isprintable():
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

    def results_upsert(
        self, records: Sequence[ResultRecord], only: str | None = None
    ) -> tuple[str, list[object]]:
        """The document is read as ``jsonb``, parsed once: read as ``json``, every ``->>``
        lexed the row's text again."""
        document = results_document(records, datetime.datetime.isoformat)
        picks = ", ".join(f"(e->>{i})::{_PG_TYPES.get(c, 'text')}"
                          for i, c in enumerate(RESULT_COLUMNS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in RESULT_UPDATED)
        sql = (
            f"INSERT INTO {RESULTS_TABLE} ({', '.join(RESULT_COLUMNS)}, date_created) "
            f"SELECT {picks}, now() FROM jsonb_array_elements(%s::jsonb) AS e "
            + (f"WHERE (e->>0) IN ({only}) " if only else "")
            + f"ON CONFLICT (task_id) DO UPDATE SET {updates}"
        )
        return sql, [document]

    def results_of(self, task_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """One statement for any number of ids, given as one JSON text: as an array parameter
        psycopg encodes each id in Python, 40 ms of a 10,000-member chord's last round. A join
        (a chord's ids are distinct): ``IN`` had the server de-duplicate them first, twice the
        time."""
        if not task_ids:
            return []
        return self.execute(
            "SELECT r.task_id, r.state, r.content_type, r.result FROM json_array_elements_text("
            f"%s::json) AS m(id) JOIN {RESULTS_TABLE} r ON r.task_id = m.id",
            [json.dumps(task_ids)], fetch=True)

    # Waking workers.

    def listen(self, using: str | None = None) -> Any:
        """Its own autocommit connection (never one of Django's, which pool children and
        transactions use), listening on both channels; with the parameters of ``using``
        (``DJQUEUE_LISTEN_DATABASE``) if given, which must reach PostgreSQL directly."""
        import psycopg

        connection = connections[using or self.using]
        try:
            pooled = route(connection).pooled
        except DatabaseError as exc:
            raise ListenerLost(str(exc)) from exc
        finally:
            if using:  # only asked whether it is direct: the worker uses its own connection
                connection.close()
        if pooled:
            raise ListenerUnavailable(pooling.CANNOT_LISTEN.format(alias=connection.alias))
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.setdefault("connect_timeout", 5)
        listening = None
        try:
            listening = psycopg.connect(**params, autocommit=True)
            listening.execute(f"LISTEN {NOTIFY_CHANNEL}")
            listening.execute(f"LISTEN {CONTROL_CHANNEL}")
        except psycopg.Error as exc:
            if listening is not None:
                with contextlib.suppress(Exception):  # closing a broken connection
                    listening.close()
            raise ListenerLost(str(exc)) from exc
        return listening

    def heard(self, listening: Any) -> tuple[set[str], bool]:
        import psycopg

        try:
            notes = list(listening.notifies(timeout=0))
        except psycopg.Error as exc:
            raise ListenerLost(str(exc)) from exc
        return ({n.payload for n in notes if n.channel == NOTIFY_CHANNEL},
                any(n.channel == CONTROL_CHANNEL for n in notes))

    def announce_control(self) -> None:
        with connections[self.using].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CONTROL_CHANNEL])

    def vacuum_if_bloated(self, known_dead: int = 0) -> bool:
        """Every claim and acknowledgement leaves a dead row version, which the claim's index scan
        steps over until a VACUUM. Autovacuum normally does this (the migration sets low
        thresholds); where it is off or behind, the heartbeat thread calls this at each beat and
        when the worker turns idle after a burst: ``VACUUM (SKIP_LOCKED)`` (never waits, never
        blocks inserts or claims) once dead versions outnumber live ones and :data:`DEAD_ROWS`.
        No ANALYZE (see :meth:`steer_worker_planner`). ``known_dead`` covers statistics views
        that lag seconds behind."""
        connection = connections[self.using]
        if not connection.get_autocommit():
            return False
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n_dead_tup, n_live_tup FROM pg_stat_user_tables "
                "WHERE relid = %s::regclass",
                [TABLE],
            )
            row = cursor.fetchone()
            dead, live = (row[0], row[1]) if row else (0, 0)
            dead = max(dead, known_dead)
            if dead < max(DEAD_ROWS, live):
                return False
            began = time.monotonic()
            cursor.execute(f"VACUUM (SKIP_LOCKED) {TABLE}")
        vacuum_logger.info("Vacuumed %s (about %d dead row versions) in %.2fs.", TABLE, dead,
                           time.monotonic() - began)
        return True


def route(connection: Any) -> pooling.Route:
    """Whether ``connection``'s alias is reached through a pooler (:func:`.pooling.route`)."""
    return pooling.route(connection, "SELECT current_setting('port')::int")


@functools.cache
def _notifying_insert() -> str:
    """One message's ``INSERT`` and its ``NOTIFY``, in one statement."""
    return (f"WITH added AS ({insert_sql()} RETURNING queue) "
            f"SELECT pg_notify('{NOTIFY_CHANNEL}', queue) FROM added")


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
