"""Workflows on djqueue: a 10,000-member chord against the same group alone, and a chain of 1,000
steps (steps per second), with one worker (``-c 2``) on the database of ``--postgres`` (default
``BENCH_POSTGRES_URL``, else ``postgres://postgres@127.0.0.1:5432/bench_canvas``, created
beforehand) or ``--sqlite URL``.

Each figure is the median of ``--runs`` runs (default 3), the three measurements taking turns in
each run; a measurement is timed from the call of ``apply_async()`` to the moment its last result
is stored (results are polled every 10 ms). Prints one table and the two ratios the issue asks
for: chord / group (≤ 1.5) and chain steps per second (≥ 200 on PostgreSQL).

``--baseline REV`` (repeatable, PostgreSQL): djqueue as of that git revision runs too, from a
checkout under ``bench/.baseline-N`` (as ``bench/run.py --baseline``), in a database of its own
(``<name>_baseline1``…), taking turns with the checkout run by run; each run of each is a process
of its own (this script with ``--tree``), so the two never share imported code.

    python bench/canvas.py [--postgres URL | --sqlite URL] [--members 10000] [--steps 1000]
                           [--runs 3] [--baseline REV ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEASURES = ("group", "chord", "chain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--postgres", default=os.environ.get(
        "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_canvas"))
    parser.add_argument("--sqlite", help="run on this SQLite database instead")
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="REV", action="append", default=[],
                        help="also run djqueue as of this git revision (PostgreSQL), taking "
                        "turns with the checkout")
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)  # one run, in this tree
    options = parser.parse_args()
    if options.tree is not None:
        print(json.dumps(one_run(options.tree, options.sqlite or options.postgres,
                                 options.members, options.steps)))
        return
    sys.path.insert(0, str(HERE.parent))
    from bench.run import baseline_tree, database_beside

    systems = {"checkout": (HERE.parent, options.sqlite or options.postgres)}
    for number, revision in enumerate(dict.fromkeys(options.baseline), 1):
        systems[f"@{revision}"] = (baseline_tree(revision, number),
                                   database_beside(options.postgres, f"_baseline{number}"))
    found: dict[str, list[dict[str, float]]] = {title: [] for title in systems}
    loads = []
    for _ in range(options.runs):
        for title, (tree, url) in systems.items():
            proc = subprocess.run(
                [sys.executable, __file__, "--tree", str(tree), "--postgres", url,
                 "--members", str(options.members), "--steps", str(options.steps)],
                capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{title} failed:\n{proc.stdout}\n{proc.stderr}")
            found[title].append(json.loads(proc.stdout.splitlines()[-1]))
            loads.append(os.getloadavg()[0])
    vendor = "SQLite" if options.sqlite else "PostgreSQL"
    print(f"djqueue on {vendor}, 1 worker -c 2, median of {options.runs} runs, interleaved "
          f"(load average {min(loads):.1f}-{max(loads):.1f})")
    n, steps = options.members, options.steps
    medians = {}
    for title, runs in found.items():
        median = medians[title] = {m: statistics.median(r[m] for r in runs) for m in MEASURES}
        print(f"{title}:")
        print(f"  group of {n:,}:          {median['group']:.2f} s  "
              f"({n / median['group']:,.0f} tasks/s)")
        print(f"  chord of {n:,} + body:   {median['chord']:.2f} s  "
              f"(chord / group = {median['chord'] / median['group']:.2f})")
        print(f"  chain of {steps:,} steps:    {median['chain']:.2f} s  "
              f"({steps / median['chain']:,.0f} steps/s)")
        print("  runs:", {m: [round(r[m], 2) for r in runs] for m in MEASURES})
    for title in list(systems)[1:]:
        print(f"checkout / {title}: " + ", ".join(
            f"{m} time {medians['checkout'][m] / medians[title][m]:.2f}x" for m in MEASURES))


def one_run(tree: Path, url: str, n: int, steps: int) -> dict[str, float]:
    """One run of the three measurements with djqueue and the benchmark's tasks from ``tree``
    (a worker started there), on the database at ``url``: seconds each."""
    sys.path.insert(0, str(tree))
    os.environ["DATABASE_URL"] = url
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

    found = {}
    with tempfile.TemporaryDirectory() as scratch:
        worker = start_worker_process([sys.executable, *DJQUEUE_WORKER], Path(scratch) / "log")
        try:
            time.sleep(3)  # the worker's start-up
            found["group"] = timed(lambda: group(member.s(i) for i in range(n)).apply_async(),
                                   lambda: TaskResult.objects.count() >= n)
            body = {}
            found["chord"] = timed(
                lambda: body.setdefault("r", chord(member.s(i) for i in range(n))(total.s())),
                lambda: body["r"].ready())
            assert body["r"].get() == n
            walked = {}
            found["chain"] = timed(
                lambda: walked.setdefault("r", chain(step.s(0), *[step.s()] * (steps - 1))
                                          .apply_async()),
                lambda: walked["r"].ready())
            assert walked["r"].get() == steps
        finally:
            stop_worker(worker)
    return found


if __name__ == "__main__":
    main()
