"""Flow control on PostgreSQL (``BENCH_POSTGRES_URL``, default ``bench_djqueue``):
``python bench/flow.py [--only rate|unique|concurrency]``.

- rate: 3 workers, ``60/m`` cluster-wide (``bench.flow_paced``), 200 tasks: the most starts in
  any 60 s window ``[t, t + 60)``, on the database's clock (each message's ``started_at``, where
  the limit is counted) and on the tasks' own; takes about 3.5 minutes.
- unique: 8 processes race 1,000 enqueues over 100 unique keys (125 each, every key from every
  process): messages left in the table (100 expected).
- concurrency: ``bench.flow_held`` (``concurrency_limit=2``), 10 keys, 200 tasks of 0.2 s, 4
  workers × ``-c 4``: the most running at once per key, from samples of the table every 20 ms
  throughout and from the tasks' own start and end times.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
os.environ.setdefault("DATABASE_URL", os.environ.get(
    "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_djqueue"))
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.common import DJQUEUE_WORKER, start_worker_process, stop_worker  # noqa: E402
from bench.djqueue_side import DjqueueSystem  # noqa: E402
from bench.tasks import flow_held, flow_paced  # noqa: E402
from djqueue.models import FlowGate, Message, UniqueTask, WorkerNode  # noqa: E402


def fresh() -> None:
    DjqueueSystem().reset()
    for model in (FlowGate, UniqueTask, WorkerNode):
        model.objects.all().delete()


def workers(count: int, log: Path, *extra: str) -> list[subprocess.Popen]:
    started = [start_worker_process([sys.executable, *DJQUEUE_WORKER, *extra], log)
               for _ in range(count)]
    deadline = time.monotonic() + 60
    while WorkerNode.objects.filter(stopped_at=None).count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not start")
        time.sleep(0.1)
    return started


def lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines() if line]


def most_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(times):
        while times[first] <= moment - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def rate(workdir: Path) -> None:
    fresh()
    log = workdir / "rate.log"
    log.write_text("")
    procs = workers(3, log)
    try:
        began = time.monotonic()
        for key in range(200):
            flow_paced.delay(key)
        while len(lines(log)) < 200:
            if time.monotonic() - began > 600:
                raise RuntimeError(f"only {len(lines(log))} of 200 started in 600 s")
            time.sleep(0.5)
        took = time.monotonic() - began
    finally:
        for proc in procs:
            stop_worker(proc)
    rows = lines(log)
    own = [float(start) for _, start, _ in rows]
    database = [float(started) for _, _, started in rows]
    print(f"rate: 3 workers, 60/m cluster-wide, 200 tasks in {took:.0f} s; most starts in any "
          f"60 s window: {most_in_window(database, 60.0)} (database clock), "
          f"{most_in_window(own, 60.0)} (tasks' clock); ran: {len(rows)}, distinct "
          f"{len({key for key, _, _ in rows})}")


PRODUCER = """
import os, sys
sys.path.insert(0, {root!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
import django
django.setup()
from bench.tasks import noop
n = int(sys.argv[1])
for i in range(125):
    key = (i + 13 * n) % 100
    noop.apply_async((key, 0.0), unique_key=f"key-{{key}}")
"""


def unique(workdir: Path) -> None:
    fresh()
    script = workdir / "producer.py"
    script.write_text(PRODUCER.format(root=str(ROOT)))
    began = time.monotonic()
    producers = [subprocess.Popen([sys.executable, str(script), str(n)], cwd=ROOT)
                 for n in range(8)]
    codes = [p.wait(300) for p in producers]
    took = time.monotonic() - began
    print(f"unique: 8 processes, 1,000 enqueues over 100 keys in {took:.1f} s (exit codes "
          f"{sorted(set(codes))}): messages {Message.objects.count()}, unique rows "
          f"{UniqueTask.objects.count()}")


def concurrency(workdir: Path) -> None:
    fresh()
    log = workdir / "concurrency.log"
    log.write_text("")
    procs = workers(4, log, "-P", "threads", "-c", "4")
    samples: collections.Counter[str] = collections.Counter()
    peak_sampled, count = 0, 0
    try:
        began = time.monotonic()
        for n in range(200):
            flow_held.apply_async((n, 0.2), concurrency_key=f"key-{n % 10}")
        while len(lines(log)) < 200:
            if time.monotonic() - began > 600:
                raise RuntimeError(f"only {len(lines(log))} of 200 done in 600 s")
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT flow_key, count(*) FROM {Message._meta.db_table} "
                               "WHERE state = 'started' AND flow_key IS NOT NULL GROUP BY flow_key")
                for key, running in cursor.fetchall():
                    samples[key] = max(samples[key], running)
                    peak_sampled = max(peak_sampled, running)
            count += 1
            time.sleep(0.02)
        took = time.monotonic() - began
    finally:
        for proc in procs:
            stop_worker(proc)
    events = sorted([(float(start), 1, int(n) % 10) for n, _, start in lines(log)]
                    + [(float(end), -1, int(n) % 10) for n, end, _ in lines(log)])
    running: collections.Counter[int] = collections.Counter()
    peak_own = 0
    for _, step, key in events:
        running[key] += step
        peak_own = max(peak_own, running[key])
    print(f"concurrency: limit 2 per key, 10 keys, 200 tasks of 0.2 s, 4 workers x -c 4, "
          f"{took:.1f} s ({200 * 0.2 / took:.1f} tasks running on average): most running "
          f"for a key: {peak_sampled} in {count} samples of the table, {peak_own} from the "
          f"tasks' own start and end times")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["rate", "unique", "concurrency"])
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory() as tmp:
        for part in (unique, concurrency, rate):
            if options.only in (None, part.__name__):
                part(Path(tmp))


if __name__ == "__main__":
    main()
