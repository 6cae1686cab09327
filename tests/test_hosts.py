"""Three worker hosts (network namespaces, tests/netns.py) against one PostgreSQL (a private
cluster listening on this machine's end of each link): a drain with a cable cut longer than the
lease, and LISTEN wake-ups across the links."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from django.db import connection

from . import netns
from .conftest import WorkerProcess, executions, wait_until
from .pg_cluster import PrivatePostgres, manage

pytestmark = pytest.mark.usefixtures("transactional_db")

TASKS, LEASE, CUT = 10_000, 2.5, 6.0
ENQUEUE = """
import json
from djqueue import group
from tests.fault_tasks import nap
sent = group(nap.s(f"k{{i}}", 0) for i in range({count}))
print(json.dumps([r.id for r in sent.apply_async()]))
"""
WAKE = """
from tests.fault_tasks import quick
print([quick.apply_async((f"woken-{{n}}",), queue=f"only-{{n}}").get(timeout=20)
       for n in range({count})])
"""


@pytest.fixture
def three_hosts(request: pytest.FixtureRequest) -> Iterator[tuple[PrivatePostgres, list[netns.Host]]]:
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass (a PostgreSQL server of its own)")
    why = netns.available()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot make test hosts: {why}")
        pytest.skip(f"cannot make test hosts: {why}")
    server = request.getfixturevalue("private_postgres")
    with netns.hosts(3) as made:
        server.serve([host.address for host in made], netns.network(made))
        yield server, made


def test_three_hosts_drain_with_a_cable_cut_longer_than_the_lease(
    three_hosts: tuple[PrivatePostgres, list[netns.Host]],
    start_worker: Callable[..., WorkerProcess], worker_env: dict[str, str], record_file,
) -> None:
    server, hosts = three_hosts
    manage(server.url, "migrate", "-v0", env=worker_env)
    workers = []
    for n, host in enumerate(hosts):
        url = f"postgres://postgres@{host.address}:{server.port}/postgres"
        # Polling once a minute: once idle, a worker hears of new messages through LISTEN only.
        workers.append(start_worker(
            "-c", "2", "-Q", f"celery,only-{n}", "-n", f"host{n}@%h", inside=host.command(),
            env={"DATABASE_URL": url, "DJQUEUE_WORKER_LOST_TIMEOUT": str(LEASE),
                 "DJQUEUE_POLLING_INTERVAL": "60"}))
    ids = json.loads(manage(server.url, "shell", "-v0", "-c", ENQUEUE.format(count=TASKS),
                            env=worker_env).splitlines()[-1])

    def runs() -> int:
        return record_file.read_bytes().count(b"\n")

    wait_until(lambda: runs() >= TASKS // 4, timeout=120, what="a quarter of the tasks run")
    hosts[0].cut()
    time.sleep(CUT)
    hosts[0].mend()

    def states() -> dict[str, str]:
        with psycopg.connect(server.url, autocommit=True) as db:
            return dict(db.execute("SELECT task_id, state FROM djqueue_taskresult").fetchall())

    wait_until(lambda: len(states()) >= TASKS, timeout=240, what="every task's result")
    done = states()
    ran = executions(record_file)
    keys = {task_id: f"k{i}" for i, task_id in enumerate(ids)}
    twice = sorted(key for key, count in ran.items() if count > 1)
    lost = [task_id for task_id, state in done.items() if state == "FAILURE"]
    never = [keys[task_id] for task_id in ids if keys[task_id] not in ran]
    assert twice == [], twice
    assert set(done.values()) <= {"SUCCESS", "FAILURE"}
    # A task lost with the cable (started, not acks_late) has FAILURE WorkerLostError and ran
    # at most once; every other task ran exactly once.
    assert [key for key in never if key not in {keys[t] for t in lost}] == []
    assert all(worker.proc.poll() is None for worker in workers), [w.log() for w in workers]
    with psycopg.connect(server.url, autocommit=True) as db:  # the cut outlasted the lease:
        found = db.execute("SELECT lost_at IS NOT NULL FROM djqueue_worker "  # others noticed
                           "WHERE hostname LIKE 'host0@%%'").fetchall()
    assert found == [(True,)], found

    # Every host is woken through LISTEN across its link (the queue only its worker consumes).
    woken = manage(server.url, "shell", "-v0", "-c", WAKE.format(count=len(hosts)),
                   env=worker_env, timeout=60)
    assert "woken-0" in woken and "woken-2" in woken, woken
