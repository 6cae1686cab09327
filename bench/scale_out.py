"""Scale-out on PostgreSQL: 8 worker processes x -c 2 against 2 x -c 2 draining one queue.

The workers are started first; the tasks are enqueued once all of them run. Reports throughput
(first to last task start), whether any task ran twice or not at all, and samples of
pg_stat_activity (sessions waiting on a lock) taken every 100 ms during the drain.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.common import drain_rate, read_starts, stop_worker, wait_lines  # noqa: E402
from bench.djqueue_side import DjqueueSystem  # noqa: E402
from djqueue.models import WorkerNode  # noqa: E402

TASKS = int(os.environ.get("BENCH_SCALE_TASKS", 20000))
ACTIVITY = (
    "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), "
    "count(*) FILTER (WHERE state = 'active' AND pid <> pg_backend_pid()) "
    "FROM pg_stat_activity WHERE datname = current_database()"
)


def drain_with(processes: int, workdir: Path) -> dict[str, object]:
    system = DjqueueSystem()
    system.reset()
    WorkerNode.objects.all().delete()
    log = workdir / f"starts-{processes}.log"
    log.write_text("")
    workers = [system.start_worker(log) for _ in range(processes)]
    samples: list[tuple[int, int]] = []
    try:
        # Steady state, not start-up: every worker is running before the tasks arrive (in one
        # transaction, so they all see them at once).
        deadline = time.monotonic() + 60
        while WorkerNode.objects.filter(stopped_at=None).count() < processes:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        time.sleep(1)  # their pools fork and they start listening
        system.bulk_enqueue(TASKS)
        deadline = time.monotonic() + 600
        while log.read_bytes().count(b"\n") < TASKS and time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute(ACTIVITY)
                samples.append(cursor.fetchone())
            time.sleep(0.1)
        wait_lines(log, TASKS, 5)
        time.sleep(1)  # let a duplicate, if there were one, show up
    finally:
        for worker in workers:
            stop_worker(worker)
    runs = collections.Counter(key for key, _, _ in read_starts(log))
    return {
        "rate": drain_rate(log),
        "twice": sum(1 for n in runs.values() if n > 1),
        "missing": TASKS - len(runs),
        "lock_waits": [lock for lock, _ in samples],
        "active": [active for _, active in samples],
    }


def main() -> None:
    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: drain_with(n, Path(tmp)) for n in (2, 8)}
    print(f"\nscale-out on PostgreSQL, {TASKS:,} tasks, each worker -c 2")
    for n, r in results.items():
        waits, active = r["lock_waits"], r["active"]
        print(
            f"  {n} workers: {r['rate']:,.0f} tasks/s; ran twice: {r['twice']}, never ran: "
            f"{r['missing']}; pg_stat_activity over {len(waits)} samples: sessions waiting on a "
            f"lock max {max(waits)} (mean {sum(waits) / len(waits):.2f}), active max {max(active)}"
        )
    print(f"  8 vs 2 workers: {results[8]['rate'] / results[2]['rate']:.2f}x")


if __name__ == "__main__":
    main()
