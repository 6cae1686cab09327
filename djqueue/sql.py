"""Running djqueue's own hot statements (publish, the worker's round) on Django's connection.

On PostgreSQL they run past Django's cursor wrapper as prepared statements with the parameters
bound on the server: Django binds on the client, so PostgreSQL parses and plans every statement
anew, and a long parameter (a JSON document of rows) is escaped into the SQL text. Statements
keep one text whatever the batch size (arrays, not lists of placeholders), so each is prepared
once per connection. They run on Django's connection, so they belong to the caller's transaction.

Django's own cursor is used instead whenever something needs to see the statements (query
logging, as under ``DEBUG`` or ``CaptureQueriesContext``, or an ``execute_wrapper``), on SQLite,
and where the project keeps psycopg from preparing statements (see :func:`prepares`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper


def execute(using: str, sql: str, params: Sequence[Any], fetch: bool = False) -> list[Any]:
    """Run one statement; its rows if ``fetch``."""
    connection = connections[using]
    if (connection.vendor != "postgresql" or connection.queries_logged
            or connection.execute_wrappers or not prepares(connection)):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if fetch else []
    import psycopg

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    raw = connection.connection
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        raw.prepare_threshold = 0  # Django's None keeps psycopg from preparing at all
        try:
            cursor.execute(sql, params, prepare=True)
        finally:
            raw.prepare_threshold = None
        return cursor.fetchall() if fetch else []


def prepares(connection: BaseDatabaseWrapper) -> bool:
    """Whether djqueue prepares its statements on this connection.

    Django keeps psycopg from preparing statements so that connection poolers work; djqueue
    prepares its own unless the project says it sits behind such a pooler:
    ``DISABLE_SERVER_SIDE_CURSORS`` (what Django asks for under PgBouncer's transaction pooling),
    or ``prepare_threshold`` in ``OPTIONS``, which psycopg then applies as given.
    """
    settings_dict = connection.settings_dict
    return not settings_dict.get("DISABLE_SERVER_SIDE_CURSORS") and (
        "prepare_threshold" not in settings_dict.get("OPTIONS", {})
    )
