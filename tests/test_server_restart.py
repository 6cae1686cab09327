"""A database server restarted under a working worker: nothing lost, nothing run twice.

The test starts its own server (``private_postgres``, tests/pg_cluster.py: initdb into a
temporary directory, a free port; on MariaDB ``private_mariadb``, tests/mysql_server.py:
mariadb-install-db the same way), so restarting it disturbs nobody else. It needs the server
binaries; where they are missing it is skipped with that reason (and fails under CI=true, where
they must be present).
"""

from __future__ import annotations

import subprocess

import pytest

from .conftest import executions, wait_until
from .pg_cluster import manage as _manage

TASKS = 300
#: Per vendor: the fixture of a private server, how to restart it (a fast shutdown that closes
#: every connection, then a start) and what that was.
SERVERS = {
    "postgresql": ("private_postgres", lambda server: server.pg_ctl("restart", "-m", "fast"),
                   "pg_ctl restart -m fast"),
    "mysql": ("private_mariadb", lambda server: server.restart(),
              "mariadbd stopped with SIGTERM, started again"),
}


@pytest.mark.django_line  # Django's connections across a server restart
def test_server_restart_mid_drain(start_worker, worker_env, record_file, fault_report,
                                  request) -> None:
    from django.db import connection

    if connection.vendor not in SERVERS:
        pytest.skip("runs in the PostgreSQL and MariaDB passes (it starts a server of its own)")
    fixture, restart, how = SERVERS[connection.vendor]
    server = request.getfixturevalue(fixture)
    url = server.url
    _manage(url, "migrate", "-v0", env=worker_env)
    worker = start_worker("-c", "2", env={"DATABASE_URL": url})
    _manage(url, "shell", "-v0", "-c",
            "from tests.fault_tasks import nap\n"
            f"for i in range({TASKS}): nap.delay(f'k{{i}}', 0.01)", env=worker_env)
    wait_until(lambda: len(record_file.read_text().splitlines()) >= 30, what="progress")
    restart(server)
    done_sql = ("from djqueue.models import TaskResult, Message\n"
                "print(TaskResult.objects.filter(state='SUCCESS').count(), Message.objects.count())")

    def finished() -> bool:
        try:
            return _manage(url, "shell", "-v0", "-c", done_sql, env=worker_env).split() == [
                str(TASKS), "0"]
        except subprocess.CalledProcessError:
            return False  # the server may still be coming back

    wait_until(finished, timeout=90, what="all results after the restart")
    runs = executions(record_file)
    assert set(runs) == {f"k{i}" for i in range(TASKS)}
    log = worker.log()
    assert "Database error" in log  # the worker saw the outage and came back
    duplicated = sum(runs.values()) - TASKS
    # A task running at the instant of the restart may have its result write fail and be retried;
    # the task itself is not re-run: executions equal tasks.
    assert duplicated == 0
    fault_report(f"server restarted ({how})", sent=TASKS,
                 executed=sum(runs.values()), lost=0, duplicated=duplicated, outcome="all SUCCESS")
