"""Quick check of the enqueue rates on the database of DATABASE_URL (SQLite when unset).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_enqueue python bench/enqueue.py

Prints the median of ``--runs`` runs (default 3) of what bench/run.py calls "enqueue 1-by-1"
(``BENCH_SINGLE`` sequential ``delay()`` calls, each its own autocommit transaction) and "bulk
enqueue" (one ``group`` of ``BENCH_BULK`` signatures). No worker is started.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.common import BULK, SINGLE  # noqa: E402
from bench.tasks import noop  # noqa: E402
from djqueue import group  # noqa: E402
from djqueue.models import Message  # noqa: E402


def rate(count: int, send: object) -> float:
    Message.objects.all().delete()
    began = time.perf_counter()
    send()  # type: ignore[operator]
    elapsed = time.perf_counter() - began
    if Message.objects.count() != count:
        raise RuntimeError("not every message was inserted")
    return count / elapsed


def single() -> None:
    for i in range(SINGLE):
        noop.delay(i, 0.0)


def bulk() -> None:
    group(noop.s(i, 0.0) for i in range(BULK)).apply_async()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    call_command("migrate", verbosity=0)
    singles, bulks = [], []
    for _ in range(runs):
        singles.append(rate(SINGLE, single))
        bulks.append(rate(BULK, bulk))
    Message.objects.all().delete()
    print(
        f"{connection.vendor}: enqueue 1-by-1 {statistics.median(singles):,.0f}/s, "
        f"bulk {statistics.median(bulks):,.0f}/s (median of {runs})"
    )


if __name__ == "__main__":
    main()
