"""djqueue behind PgBouncer in transaction pooling mode (a real PgBouncer: tests/pgbouncer.py).

Under transaction pooling one server connection serves many clients in turn, so nothing may
outlive a transaction: djqueue finds the pooler (or is told), prepares no statements there, sets
no session state there (its planner settings would reach the web process's queries), and listens
on a direct connection (``DJQUEUE_LISTEN_DATABASE``) or else polls, saying so once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator

import psycopg
import pytest
from django.db import connection

from .conftest import ROOT, WorkerProcess, executions, wait_until
from .pgbouncer import PgBouncer, pgbouncer as start_pgbouncer

pytestmark = [pytest.mark.usefixtures("transactional_db"), pytest.mark.process]


@pytest.fixture
def bouncer(request: pytest.FixtureRequest) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode; a test marked ``pool_size(n)`` gets n server connections."""
    marker = request.node.get_closest_marker("pool_size")
    if connection.vendor != "postgresql":
        pytest.skip("PgBouncer stands in front of PostgreSQL")
    if not (shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer")):
        message = "pgbouncer is not installed (scripts/test installs it with apt-get as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    settings = connection.settings_dict
    with start_pgbouncer(settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432),
                         pool_size=marker.args[0] if marker else 2) as found:
        yield found


def databases(bouncer: PgBouncer, **extra: object) -> dict[str, dict[str, object]]:
    """DATABASES for a process that reaches the test database through ``bouncer`` ("default")
    and directly ("direct")."""
    direct = {key: connection.settings_dict[key]
              for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")}
    return {"default": {**direct, "HOST": "127.0.0.1", "PORT": str(bouncer.port), **extra},
            "direct": direct}


def publish(settings: dict[str, object], count: int, key: str) -> None:
    """``count`` calls of ``delay()``, one by one, from a process with ``settings``."""
    code = ("import django; django.setup()\n"
            "from tests import fault_tasks as ft\n"
            f"for i in range({count}): ft.quick.delay(f'{key}{{i}}')\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
           "DJQUEUE_EXTRA_SETTINGS": json.dumps(settings)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def session_settings(bouncer: PgBouncer, clients: int = 6) -> set[tuple[str, str, str]]:
    """What fresh clients of the pool find set on the server connections they are given."""
    name = connection.settings_dict["NAME"]
    seen = set()
    for _ in range(clients):
        with psycopg.connect(host="127.0.0.1", port=bouncer.port, user="postgres", dbname=name,
                             prepare_threshold=None) as client:
            seen.add(client.execute("SELECT current_setting('enable_seqscan'), "
                                    "current_setting('plan_cache_mode'), "
                                    "current_setting('jit')").fetchone())
    return seen


def test_behind_pgbouncer_with_defaults_every_task_runs_once_and_nothing_leaks(
    bouncer: PgBouncer, start_worker: Callable[..., WorkerProcess], record_file,
) -> None:
    # The database's settings as a project has them before it reads about PgBouncer: djqueue
    # finds the pooler by itself (the server's port is not the one connected to).
    settings = {"DATABASES": databases(bouncer), "DEBUG": False}  # DEBUG logs, never prepares
    workers = [start_worker("-c", "2", settings=settings) for _ in range(2)]
    publish(settings, 400, "t")
    wait_until(lambda: len(executions(record_file)) == 400, timeout=120, what="400 tasks run")
    counts = executions(record_file)
    assert set(counts.values()) == {1}, [key for key, n in counts.items() if n > 1]
    for worker in workers:
        log = worker.log()
        assert worker.proc.poll() is None, log
        assert "a pooler or proxy is between" in log, log
        assert log.count("polling for new messages instead") == 1, log
        assert "prepared statement" not in log, log
    # The workers' planner settings (set on their own connections elsewhere) reached no one.
    assert session_settings(bouncer) == {("on", "auto", "on")}


def test_a_direct_listen_database_wakes_workers_behind_pgbouncer(
    bouncer: PgBouncer, start_worker: Callable[..., WorkerProcess], record_file,
) -> None:
    settings = {"DATABASES": databases(bouncer, DISABLE_SERVER_SIDE_CURSORS=True,
                                       OPTIONS={"prepare_threshold": None}),
                "DJQUEUE_LISTEN_DATABASE": "direct", "DEBUG": False}
    # Polling once a minute: a task that runs within the test's wait was announced by NOTIFY.
    worker = start_worker(settings=settings, env={"DJQUEUE_POLLING_INTERVAL": "60"})
    wait_until(lambda: _listening_sessions() >= 1, what="a LISTEN session on the direct server")
    publish(settings, 3, "woken")
    wait_until(lambda: len(executions(record_file)) == 3, timeout=30, what="tasks run on NOTIFY")
    assert "polling for new messages instead" not in worker.log()
    assert "pooler or proxy" not in worker.log()  # the settings said so: nothing to warn about


def _listening_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND query LIKE 'LISTEN djqueue%%'")
        return cursor.fetchone()[0]


CLASH = """
import os, threading, django
django.setup()
from django.db import connections
from djqueue.broker import pooling
from djqueue.broker.postgresql import PostgreSQLOperations

# As if the pooler answered on the server's own port: what the port comparison cannot see.
pooling._routes[("default", os.getpid())] = pooling.Route(False)
broker = PostgreSQLOperations("default")
outcomes = []

def client(sql):
    try:
        for _ in range(8):
            broker.execute(sql, [1], fetch=True)
        outcomes.append("ok")
    except Exception as exc:
        outcomes.append(f"{type(exc).__name__}: {exc}")
    finally:
        connections["default"].close()

for n in (1, 2, 3):  # one after another, each on a connection of its own
    thread = threading.Thread(target=client, args=(f"SELECT %s::int + {n}",))
    thread.start()
    thread.join()
print("\\n".join(outcomes))
"""


@pytest.mark.pool_size(1)
def test_a_pooler_djqueue_cannot_see_is_named_at_the_first_clash(bouncer: PgBouncer) -> None:
    """Two clients given one server connection in turn both prepare ``_pg3_0`` (psycopg's first
    name): the second gets "already exists". djqueue names PgBouncer and the fix, and prepares
    nothing on the alias from then on, so the third client runs."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
           "DJQUEUE_EXTRA_SETTINGS": json.dumps({"DATABASES": databases(bouncer),
                                                 "DEBUG": False})}
    done = subprocess.run([sys.executable, "-c", CLASH], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, second, third = done.stdout.splitlines()
    assert first == "ok" and third == "ok", done.stdout
    assert second.startswith("PoolerConflict: ") and "already exists" in second, second
    assert "PgBouncer" in second and "DISABLE_SERVER_SIDE_CURSORS" in second, second
