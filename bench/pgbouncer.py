"""djqueue behind PgBouncer in transaction mode: ``python bench/pgbouncer.py [--runs 2]``.

A PgBouncer of its own (tests/pgbouncer.py: Debian's package, transaction pooling, 4 server
connections) in front of the PostgreSQL of ``BENCH_POSTGRES_URL`` (default
``postgres://postgres@127.0.0.1:5432/bench_pgbouncer``, created if missing). One worker ``-c 2``
behind it, in turns:

- ``polling``: the project's settings as Django documents them for PgBouncer, no listen database:
  the worker polls (``DJQUEUE_POLLING_INTERVAL``, 1 s);
- ``direct LISTEN``: the same plus ``DJQUEUE_LISTEN_DATABASE`` naming a direct connection.

For each: 40 tasks sent one at a time through PgBouncer, each after the previous one started, at a
random moment of the poll; latency from ``delay()`` to the task's start (p50, p95). Then 200 tasks
at once (each run once), and the planner settings a fresh client of the pool finds (the worker
must have left none).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.common import read_starts, start_worker_process, stop_worker, wait_lines  # noqa: E402
from bench.run import database_beside  # noqa: E402
from tests.pgbouncer import pgbouncer  # noqa: E402

SEND = """
import sys, time, random, django
django.setup()
from bench.tasks import noop
count, pause = int(sys.argv[1]), float(sys.argv[2])
log = sys.argv[3]
for key in range(count):
    noop.delay(key, time.time())
    if pause:  # wait for its start, then a random part of a poll interval
        while open(log).read().count("\\n") < key + 1:
            time.sleep(0.002)
        time.sleep(random.uniform(0, pause))
"""


def settings_module(folder: Path, url: str, bouncer_port: int, listen: bool) -> None:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    direct = {"ENGINE": "django.db.backends.postgresql", "NAME": parts["dbname"],
              "USER": parts.get("user", "postgres"), "HOST": parts.get("host", "127.0.0.1"),
              "PORT": str(parts.get("port", 5432))}
    databases = {"default": {**direct, "PORT": str(bouncer_port), "HOST": "127.0.0.1",
                             "DISABLE_SERVER_SIDE_CURSORS": True,
                             "OPTIONS": {"prepare_threshold": None}},
                 "direct": direct}
    (folder / "bouncer_settings.py").write_text(
        "from bench.settings import *  # noqa\n"
        f"DATABASES = {json.dumps(databases)}\n".replace("true", "True").replace("null", "None")
        + (f"DJQUEUE_LISTEN_DATABASE = 'direct'\n" if listen else ""))


def measure(url: str, port: int, listen: bool) -> dict[str, object]:
    python = sys.executable
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        settings_module(folder, url, port, listen)
        log = folder / "starts"
        log.touch()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bouncer_settings",
               "PYTHONPATH": f"{folder}:{ROOT}", "BENCH_LOG": str(log)}
        subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("DELETE FROM djqueue_message")
        os.environ.update(env)
        worker = start_worker_process([python, "manage.py", "celery", "worker", "-c", "2"], log)
        try:
            time.sleep(5)
            subprocess.run([python, "-c", SEND, "40", "1.0", str(log)], cwd=ROOT, env=env,
                           check=True)
            latencies = sorted((start - sent) * 1000 for _, start, sent in read_starts(log))
            log.write_text("")
            subprocess.run([python, "-c", SEND, "200", "0", str(log)], cwd=ROOT, env=env,
                           check=True)
            wait_lines(log, 200, 120, worker)
            time.sleep(1)
            keys = [key for key, _, _ in read_starts(log)]
            alive = worker.poll() is None
        finally:
            stop_worker(worker)
        found = set()
        for _ in range(6):
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres",
                                 dbname=psycopg.conninfo.conninfo_to_dict(url)["dbname"],
                                 prepare_threshold=None) as client:
                found.add(client.execute(
                    "SELECT current_setting('enable_seqscan') || ' ' || "
                    "current_setting('plan_cache_mode') || ' ' || current_setting('jit')"
                ).fetchone()[0])
    return {"p50 ms": statistics.median(latencies),
            "p95 ms": latencies[int(len(latencies) * 0.95) - 1],
            "200 sent, ran": len(set(keys)), "ran twice": len(keys) - len(set(keys)),
            "worker alive": alive, "pool clients see": sorted(found)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get(
        "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_pgbouncer"))
    options = parser.parse_args()
    url = database_beside(options.postgres, "")
    parts = psycopg.conninfo.conninfo_to_dict(url)
    results: dict[str, list[dict[str, object]]] = {"polling": [], "direct LISTEN": []}
    with pgbouncer(parts.get("host", "127.0.0.1"), int(parts.get("port", 5432)), 4) as bouncer:
        for _ in range(options.runs):  # the two take turns
            for name in results:
                results[name].append(measure(url, bouncer.port, name == "direct LISTEN"))
    for name, runs in results.items():
        print(f"{name}:")
        for key in runs[0]:
            print(f"  {key:>16}: {' / '.join(str(run[key]) for run in runs)}")


if __name__ == "__main__":
    random.seed(1)
    main()
