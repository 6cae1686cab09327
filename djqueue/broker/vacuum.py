"""Keeping the message table small on PostgreSQL: every claim and acknowledgement leaves a dead
row version behind, and the claim's index scan steps over dead entries until a VACUUM removes
them.

Autovacuum normally does this; the migration sets the message table's autovacuum thresholds low
(a queue table is small and churns fast, so the default 20% of its size is far too late). Where
autovacuum is off or lags behind, workers vacuum it themselves from their heartbeat thread (at
each beat, and at once when a worker turns idle after a burst of tasks): when
dead row versions outnumber live ones (and exceed :data:`DEAD_ROWS`), ``VACUUM (SKIP_LOCKED)``,
which never waits for another vacuum of the same table and never blocks inserts or claims. (No
ANALYZE: a queue table's statistics are out of date a moment later whatever is done; the worker
does not let the planner rely on them, see :func:`djqueue.broker.sql.steer_worker_planner`.)
"""

from __future__ import annotations

import logging
import time

from django.db import connections

from .statements import TABLE

logger = logging.getLogger("djqueue.vacuum")

#: Dead row versions below which the table is left to autovacuum.
DEAD_ROWS = 10_000


def vacuum_if_bloated(using: str, known_dead: int = 0) -> bool:
    """Vacuum the message table if it holds many dead row versions; True if it did.

    ``known_dead``: dead row versions the caller knows it left (the statistics reach the
    statistics views up to seconds late).
    """
    connection = connections[using]
    if connection.vendor != "postgresql" or not connection.get_autocommit():
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_dead_tup, n_live_tup FROM pg_stat_user_tables WHERE relid = %s::regclass",
            [TABLE],
        )
        row = cursor.fetchone()
        dead, live = (row[0], row[1]) if row else (0, 0)
        dead = max(dead, known_dead)
        if dead < max(DEAD_ROWS, live):
            return False
        began = time.monotonic()
        cursor.execute(f"VACUUM (SKIP_LOCKED) {TABLE}")
    logger.info("Vacuumed %s (about %d dead row versions) in %.2fs.", TABLE, dead,
                time.monotonic() - began)
    return True
