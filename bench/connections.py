"""Connections a worker holds: ``python bench/connections.py [--baseline REV] [--runs 2]``.

One worker ``-c 2`` (prefork) on PostgreSQL (``BENCH_POSTGRES_URL``, default
``postgres://postgres@127.0.0.1:5432/bench_connections``), heartbeat every second
(``DJQUEUE_WORKER_LOST_TIMEOUT=6``). From ``pg_stat_activity``, sampled every 50 ms:

- idle, 6 s: sessions at once (most) and sessions seen in all while watched;
- draining 1,000 tasks that use no database, then 200 that use the ORM: sessions at once (most)
  and sessions seen in all while draining;
- idle again, 2 s after the drain: sessions at once.

With ``--baseline REV`` that revision (a checkout under bench/.baseline-N, a database of its own)
takes turns with this checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.common import start_worker_process, stop_worker  # noqa: E402
from bench.run import baseline_tree, database_beside  # noqa: E402

ENQUEUE = """
import django; django.setup()
from djqueue import app
for i in range({plain}): app.send_task("tests.fault_tasks.quick", args=[f"p{{i}}"])
for i in range({orm}): app.send_task("tests.fault_tasks.planner_setting")
"""


def sessions(server: psycopg.Connection) -> set[tuple[int, object]]:
    return set(server.execute(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()").fetchall())


def watch(server: psycopg.Connection, until) -> tuple[int, int]:
    """(most sessions at once, sessions seen in all) while ``until()`` is false."""
    most, seen = 0, set()
    while not until():
        now = sessions(server)
        most, seen = max(most, len(now)), seen | now
        time.sleep(0.05)
    return most, len(seen)


def measure(tree: Path, url: str) -> dict[str, int]:
    env = {**os.environ, "DATABASE_URL": url, "DJQUEUE_EXTRA_IMPORTS": "tests.fault_tasks",
           "DJANGO_SETTINGS_MODULE": "example_project.settings",
           "DJQUEUE_WORKER_LOST_TIMEOUT": "6", "DJQUEUE_POLLING_INTERVAL": "1"}
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=tree, env=env, check=True)
    with tempfile.TemporaryDirectory() as folder, psycopg.connect(url, autocommit=True) as server:
        env["DJQUEUE_RECORD_FILE"] = str(Path(folder) / "record")
        server.execute("DELETE FROM djqueue_message")
        os.environ.update(env)
        worker = start_worker_process(
            [python, str(tree / "manage.py"), "celery", "worker", "-c", "2", "-l", "info"],
            Path(folder) / "bench")
        try:
            time.sleep(4)  # started, forked, start-up connections closed
            ends = time.monotonic() + 6
            idle_most, idle_seen = watch(server, lambda: time.monotonic() > ends)
            enqueue = subprocess.Popen([python, "-c", ENQUEUE.format(plain=1000, orm=200)],
                                       cwd=tree, env=env)

            def drained() -> bool:  # the worker drains while the tasks are sent
                return enqueue.poll() is not None and not server.execute(
                    "SELECT 1 FROM djqueue_message LIMIT 1").fetchone()

            drain_most, drain_seen = watch(server, drained)
            assert enqueue.returncode == 0, "sending the tasks failed"
            time.sleep(2)
            after = len(sessions(server))
        finally:
            stop_worker(worker)
    return {"idle at once": idle_most, "idle seen": idle_seen,
            "draining at once": drain_most, "draining seen": drain_seen,
            "after drain": after}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", metavar="REV")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get(
        "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_connections"))
    options = parser.parse_args()
    systems = {"this checkout": (ROOT, database_beside(options.postgres, ""))}
    if options.baseline:
        systems[f"baseline {options.baseline}"] = (
            baseline_tree(options.baseline, 1), database_beside(options.postgres, "_baseline1"))
    results: dict[str, list[dict[str, int]]] = {name: [] for name in systems}
    for _ in range(options.runs):  # the systems take turns
        for name, (tree, url) in systems.items():
            results[name].append(measure(tree, url))
    for name, runs in results.items():
        print(f"{name}:")
        for key in runs[0]:
            print(f"  {key:>18}: {' / '.join(str(run[key]) for run in runs)}")


if __name__ == "__main__":
    main()
