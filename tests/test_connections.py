"""How many connections a worker holds (docs/deployment.md, "Connections"): one for its loop and
heartbeat together, one to LISTEN, and one per pool child only while its tasks use the ORM (kept
for ``CONN_MAX_AGE``, 0 by default) — none opened per heartbeat."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.db import connection

from tests import fault_tasks as ft

from .conftest import WorkerProcess

pytestmark = pytest.mark.usefixtures("transactional_db")


def sessions() -> set[tuple[int, object]]:
    """The other sessions on the test database now: (backend pid, when it started)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, backend_start FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return set(cursor.fetchall())


def watch(seconds: float) -> list[set[tuple[int, object]]]:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(sessions())
        time.sleep(0.05)
    return samples


def test_a_worker_holds_one_connection_for_loop_and_heartbeat_and_children_none_when_idle(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("counts PostgreSQL's sessions (pg_stat_activity)")
    # A beat every 0.2 s: 15 beats while watched.
    worker = start_worker("-c", "2", env={"DJQUEUE_WORKER_LOST_TIMEOUT": "1.2"})
    time.sleep(0.5)  # the start-up's own connections (checks, registration) are closed by now
    idle = watch(3.0)
    seen = set().union(*idle)
    assert len(seen) == 2, seen  # the loop's (lent to the heartbeat) and the LISTEN connection
    assert all(sample == idle[0] for sample in idle), "a connection was opened and closed"

    results = [ft.planner_setting.delay() for _ in range(40)]  # tasks that use the ORM
    draining = watch(1.0)
    assert [r.get(timeout=60) for r in results]
    assert max(map(len, draining)) <= 4  # and one per child while its tasks use the ORM
    time.sleep(0.5)
    assert sessions() == idle[0], "a pool child kept its connection after its tasks"
    assert worker.proc.poll() is None
