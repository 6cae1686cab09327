"""Running djqueue's own hot statements (publishing, the worker's round) on Django's connection.

On PostgreSQL they run past Django's cursor wrapper, with the parameters bound on the server, and
as prepared statements once they have run :data:`PREPARE_AFTER` times on a connection: Django
binds on the client, so PostgreSQL parses and plans every statement anew, and a long parameter (a
JSON document of rows) is escaped into the SQL text. The statements keep one text whatever the
batch size (arrays, not lists of placeholders), so each is prepared once per connection. They run
on Django's connection (with its error wrapping and broken-transaction check), so they belong to
the caller's transaction.

Django's own cursor is used instead on SQLite, and whenever something needs to see the statements:
query logging (``DEBUG``, ``CaptureQueriesContext``) or an ``execute_wrapper``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created

#: Runs of a statement on a connection before it is prepared there: a connection that runs it
#: once (a request with ``CONN_MAX_AGE = 0`` sending one message) pays no extra round trip.
PREPARE_AFTER = 5


def execute(using: str, sql: str, params: Sequence[Any], fetch: bool = False) -> list[Any]:
    """Run one statement; its rows if ``fetch``."""
    connection = connections[using]
    if connection.vendor != "postgresql" or connection.queries_logged or connection.execute_wrappers:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if fetch else []
    import psycopg  # PostgreSQL needs psycopg 3 (the "postgres" extra); SQLite does not

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    raw = connection.connection
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        if not prepares(connection.settings_dict):
            cursor.execute(sql, params)
        else:
            raw.prepare_threshold = PREPARE_AFTER  # for this statement only: Django's None stays
            try:
                cursor.execute(sql, params)
            finally:
                raw.prepare_threshold = None
        return cursor.fetchall() if fetch else []


def prepares(settings_dict: dict[str, Any]) -> bool:
    """Whether djqueue prepares its statements on this connection.

    Django keeps psycopg from preparing statements so that connection poolers work; djqueue
    prepares its own unless the project says it sits behind such a pooler:
    ``DISABLE_SERVER_SIDE_CURSORS`` (what Django asks for under PgBouncer's transaction pooling),
    or ``prepare_threshold`` in ``OPTIONS``, which psycopg then applies as given.
    """
    return not settings_dict.get("DISABLE_SERVER_SIDE_CURSORS") and (
        "prepare_threshold" not in settings_dict.get("OPTIONS", {})
    )


def steer_worker_planner(threads: Sequence[str]) -> None:
    """From now on, this process's PostgreSQL sessions opened by ``threads`` (names) plan with
    sequential scans disabled (``enable_seqscan = off``), their prepared statements once, with
    the plan for any parameters (``plan_cache_mode = force_generic_plan``), and never compile
    them (``jit = off``).

    A prefork worker process runs only djqueue's own statements, and each of them is answered by
    an index. Statistics of a queue table are always out of date (it may hold a million rows a
    minute after it was analyzed empty, or the reverse), and with them the planner turned claims
    into sequential scans of the whole table: about 1 ms against 14 ms for a claim of 400 rows
    from 20,000 on the development machine. With no plan but index scans left to choose, a
    plan made for the parameters of each run (which PostgreSQL's ``auto`` mode kept choosing for
    the claim) is the same plan made again: planning was about a quarter of an idle worker's
    one-message claim. A generic plan does not know the claim's ``LIMIT``, so with a million
    waiting rows its estimated cost passed ``jit_above_cost`` and each claim spent 8 ms compiling
    what takes 1 ms to run; none of these statements reads enough rows for JIT to pay. Pool
    children, which run the project's tasks, are other processes and are not affected.
    """
    pid = os.getpid()

    def steer(sender: Any, connection: Any, **kwargs: Any) -> None:
        if (connection.vendor == "postgresql" and os.getpid() == pid
                and threading.current_thread().name in threads):
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('enable_seqscan', 'off', false), "
                               "set_config('plan_cache_mode', 'force_generic_plan', false), "
                               "set_config('jit', 'off', false)")

    connection_created.connect(steer, weak=False, dispatch_uid=f"djqueue.broker.sql.steer.{pid}")
    connections.close_all()  # those already open reconnect with the setting

