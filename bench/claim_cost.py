"""What one claim costs with 0 and with 1,000,000 waiting messages (PostgreSQL).

Prints EXPLAIN (ANALYZE, BUFFERS) of claiming.claim's statement and the median time of repeated
claims of up to 100 rows, each in a transaction that is rolled back so the table stays as it is:
with 0, 100 and 1,000,000 waiting messages, and just after all were deleted (before VACUUM).
The claim SQL is taken from claiming.claim itself, not written again here.
"""

from __future__ import annotations

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
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from djqueue import broker, claiming  # noqa: E402
from djqueue.models import Message  # noqa: E402

ROWS = int(os.environ.get("BENCH_CLAIM_ROWS", 1_000_000))
BATCH, REPEAT = 100, 50


#: As a worker with two idle pool processes that has run the task before claims: the first two
#: rows are marked started in the claim itself, the others reserved.
START = claiming.StartNow(idle=2, names=["bench.noop"], queued=0, short_names=[],
                        acks_late_names=[])


def claim() -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        claimed = claiming.claim("default", ["celery"], BATCH, "bench@host", None, 300, START)
    return len(claimed), captured.captured_queries[-1]["sql"]


def measure(label: str) -> None:
    timings, count = [], 0
    for _ in range(REPEAT):
        with transaction.atomic():
            began = time.perf_counter()
            count, sql = claim()
            timings.append((time.perf_counter() - began) * 1000)
            transaction.set_rollback(True)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        plan = "\n".join("    " + row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    print(f"\n{label}: claim of up to {BATCH} rows took {statistics.median(timings):.2f} ms "
          f"(median of {REPEAT}, rows claimed: {count})\n{plan}")


def empty(vacuum: bool) -> None:
    Message.objects.all().delete()
    if vacuum:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {broker.TABLE}")


def main() -> None:
    if connection.vendor != "postgresql":
        raise SystemExit("claim_cost.py measures PostgreSQL: set DATABASE_URL=postgres://...")
    call_command("migrate", verbosity=0)
    empty(vacuum=True)
    measure("0 waiting messages (table vacuumed)")
    from bench.tasks import noop

    noop.delay(0, 0.0)  # one real message, copied in SQL
    columns = [f.column for f in Message._meta.concrete_fields if not f.primary_key]
    names = ", ".join(columns)
    for rows in (BATCH, ROWS):  # as many as one claim takes, then a million
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {broker.TABLE} ({names}) SELECT {names} FROM {broker.TABLE}, "
                f"generate_series(%s, %s) WHERE id = (SELECT min(id) FROM {broker.TABLE})",
                [Message.objects.count() + 1, rows]
            )
            cursor.execute(f"VACUUM ANALYZE {broker.TABLE}")
        measure(f"{Message.objects.count():,} waiting messages")
    empty(vacuum=False)
    measure("0 waiting messages, just after deleting them all (dead index entries, no VACUUM yet)")
    empty(vacuum=True)


if __name__ == "__main__":
    main()
