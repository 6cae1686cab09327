"""Whether a connection pooler sits between djqueue and the database, and what that forbids.

Under a pooler in transaction mode (PgBouncer's ``pool_mode = transaction``, its usual mode with
Django) consecutive transactions of one client run on different server connections, and one
server connection serves many clients in turn. Whatever outlives a transaction then reaches the
wrong client: a prepared statement (another client's ``_pg3_0`` runs with this one's
parameters, or is missing), a ``SET`` (djqueue's planner settings in the web process's
queries), a ``LISTEN`` (notifications reach whoever holds the server connection next). On such a
database alias djqueue therefore prepares nothing, sets nothing for the session and listens on
``DJQUEUE_LISTEN_DATABASE``, a database alias that connects directly, or else polls.

Which aliases are pooled: those the project marks so, with ``DISABLE_SERVER_SIDE_CURSORS`` (what
Django's documentation asks for under transaction pooling) or ``prepare_threshold`` in
``OPTIONS``; and those where the vendor module finds the server listening on another port than
the one the client connected to (a pooler or a proxy in between; a proxy that changes the port is
treated alike, which costs only speed). A pooler it cannot see is found by the first clash of
prepared statements, reported once with the fix (:class:`PoolerConflict`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from django.db import OperationalError

logger = logging.getLogger("djqueue.pooling")

#: What to do about a pooler in transaction mode, for the messages that need it.
FIX = ("Behind PgBouncer in transaction mode, set 'DISABLE_SERVER_SIDE_CURSORS': True and "
       "'OPTIONS': {'prepare_threshold': None} in the database's settings, and point "
       "DJQUEUE_LISTEN_DATABASE at a database alias that connects to PostgreSQL directly "
       "(docs/deployment.md, 'PgBouncer').")

#: Why a pooled alias cannot listen, and what to set.
CANNOT_LISTEN = ("cannot LISTEN on database {alias!r}: it is reached through a pooler, which hands "
                 "its server connection (and the notifications) to other clients. Set "
                 "DJQUEUE_LISTEN_DATABASE to a database alias that connects to PostgreSQL directly")


class PoolerConflict(OperationalError):
    """Prepared statements clashed on a pooled connection: another client's statement ran, or
    this client's was missing. An ``OperationalError``, so a worker waits it out as it does an
    outage (djqueue prepares nothing on the alias from then on)."""


@dataclass(frozen=True)
class Route:
    """How djqueue reaches the database of one alias."""

    pooled: bool
    why: str = ""


_routes: dict[tuple[str, int], Route] = {}
#: The route of an alias whose settings say a pooler is in the way.
SAID = Route(True, "the database's settings say it is reached through a pooler")


def route(connection: Any, server_port_sql: str) -> Route:
    """The route to ``connection``'s alias (Django's connection): pooled if its settings say so
    (read at each call: a dictionary lookup), or if the server reports (``server_port_sql``)
    another port than the one the client connected to (asked once per process)."""
    settings_dict = connection.settings_dict
    if settings_dict.get("DISABLE_SERVER_SIDE_CURSORS") or (
            "prepare_threshold" in settings_dict.get("OPTIONS", {})):
        return SAID
    key = (connection.alias, os.getpid())
    found = _routes.get(key)
    if found is None:
        with connection.cursor() as cursor:
            cursor.execute(server_port_sql)
            server = cursor.fetchone()[0]
        client = connection.connection.info.port
        found = Route(False)
        if client != server:
            found = Route(True, f"the server listens on port {server} and the client "
                                f"connected to port {client}: a pooler or proxy is between")
            logger.warning("Database %r: %s; djqueue prepares no statements and sets no "
                           "session state there. %s", connection.alias, found.why, FIX)
        _routes[key] = found
    return found


def clashed(error: Exception) -> bool:
    """Whether ``error`` (Django's, wrapping the driver's) is what transaction pooling does to
    prepared statements: one missing (SQLSTATE 26000), defined twice (42P05), or run with
    another client's parameters (08P01, "bind message supplies …")."""
    state = getattr(error.__cause__, "sqlstate", None)
    return state in ("26000", "42P05") or (state == "08P01" and "prepared statement" in str(error))


def conflict(using: str, error: Exception) -> PoolerConflict:
    """Remember that ``using`` is pooled, and the error to raise for the clash ``error``."""
    _routes[(using, os.getpid())] = Route(True, "prepared statements clashed")
    text = (f"Database {using!r}: prepared statements clashed ({error}). A connection pooler in "
            f"transaction mode (PgBouncer) sits between djqueue and PostgreSQL; djqueue prepares "
            f"no statements there from now on. {FIX}")
    logger.error("%s", text)
    return PoolerConflict(text)
