"""Workflows on djqueue: a 10,000-member chord against the same group alone, and a chain of 1,000
steps (steps per second), with one worker (``-c 2``) on the database of ``--postgres`` (default
``BENCH_POSTGRES_URL``, else ``postgres://postgres@127.0.0.1:5432/bench_canvas``, created
beforehand) or ``--sqlite URL``.

Each figure is the median of ``--runs`` runs (default 3), the three measurements taking turns in
each run; a measurement is timed from the call of ``apply_async()`` to the moment its last result
is stored (results are polled every 10 ms). Prints one table and the two ratios the issue asks
for: chord / group (≤ 1.5) and chain steps per second (≥ 200 on PostgreSQL).

    python bench/canvas.py [--postgres URL | --sqlite URL] [--members 10000] [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--postgres", default=os.environ.get(
        "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_canvas"))
    parser.add_argument("--sqlite", help="run on this SQLite database instead")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    os.environ["DATABASE_URL"] = options.sqlite or options.postgres
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

    import django

    django.setup()
    # After django.setup(): these need the app registry.
    from django.core.management import call_command
    from django.db import connection

    from bench.common import DJQUEUE_WORKER, compile_checkout, start_worker_process, stop_worker
    from bench.tasks import member, step, total
    from djqueue.canvas import chain, chord, group
    from djqueue.models import Chord, Message, TaskResult

    call_command("migrate", verbosity=0)
    compile_checkout()

    def reset() -> None:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"TRUNCATE {Message._meta.db_table}, {TaskResult._meta.db_table}, "
                               f"{Chord._meta.db_table}")
        else:
            for model in (Message, TaskResult, Chord):
                model.objects.all().delete()

    def timed(send, done) -> float:
        reset()
        started = time.perf_counter()
        send()
        while not done():
            time.sleep(0.01)
        return time.perf_counter() - started

    n, steps = options.members, options.steps
    results = {"group": [], "chord": [], "chain": []}
    with tempfile.TemporaryDirectory() as scratch:
        worker = start_worker_process([sys.executable, *DJQUEUE_WORKER], Path(scratch) / "log")
        try:
            time.sleep(3)  # the worker's start-up
            for _ in range(options.runs):
                results["group"].append(timed(
                    lambda: group(member.s(i) for i in range(n)).apply_async(),
                    lambda: TaskResult.objects.count() >= n))
                body = {}
                results["chord"].append(timed(
                    lambda: body.setdefault("r", chord(member.s(i) for i in range(n))(total.s())),
                    lambda: body["r"].ready()))
                assert body["r"].get() == n
                walked = {}
                results["chain"].append(timed(
                    lambda: walked.setdefault("r", chain(step.s(0), *[step.s()] * (steps - 1))
                                              .apply_async()),
                    lambda: walked["r"].ready()))
                assert walked["r"].get() == steps
        finally:
            stop_worker(worker)
    median = {name: statistics.median(times) for name, times in results.items()}
    print(f"djqueue on {connection.vendor}, 1 worker -c 2, median of {options.runs} runs "
          f"(load {os.getloadavg()[0]:.1f})")
    print(f"  group of {n:,}:          {median['group']:.2f} s  ({n / median['group']:,.0f} tasks/s)")
    print(f"  chord of {n:,} + body:   {median['chord']:.2f} s  "
          f"(chord / group = {median['chord'] / median['group']:.2f})")
    print(f"  chain of {steps:,} steps:    {median['chain']:.2f} s  "
          f"({steps / median['chain']:,.0f} steps/s)")
    print("  runs:", {name: [round(t, 2) for t in times] for name, times in results.items()})


if __name__ == "__main__":
    main()
