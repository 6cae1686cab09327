"""What one claim costs with 0 and with 1,000,000 waiting messages (PostgreSQL).

Prints EXPLAIN (ANALYZE, BUFFERS) of the broker's claim statement and the median time of repeated
claims of up to 100 rows, each in a transaction that is rolled back so the table stays as it is:
with 0, 100 and 1,000,000 waiting messages, and just after all were deleted (before VACUUM).
The claim SQL is taken from Operations.claim_statement itself, not written again here. The session
plans as a prefork worker's does (Operations.steer_worker_planner) and the claim is prepared, as
in a worker after its first runs, so the plan shown is the generic plan a worker uses.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from psycopg import ClientCursor  # noqa: E402

from djqueue.broker import operations  # noqa: E402
from djqueue.broker.rows import TABLE, StartNow  # noqa: E402
from djqueue.models import Message  # noqa: E402

ROWS = int(os.environ.get("BENCH_CLAIM_ROWS", 1_000_000))
BATCH, REPEAT = 100, 50


#: As a worker with two idle pool processes that has run the task before claims: the first two
#: rows are marked started in the claim itself, the others reserved.
START = StartNow(idle=2, names=["bench.noop"], queued=0, short_names=[], acks_late_names=[])


CLAIM = (["celery"], BATCH, "bench@host", None, 300, START)


def explain() -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim as a prepared statement: the worker's plan."""
    statement, params = operations("default").claim_statement(*CLAIM)
    parts = statement.split("%s")
    numbered = "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]
    with transaction.atomic(), connection.cursor() as cursor:
        literals = ClientCursor(cursor.connection)
        args = ", ".join(literals.mogrify("%s", [param]) for param in params)
        cursor.execute(f"PREPARE bench_claim AS {numbered}")
        try:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_claim({args})")
            plan = "\n".join("    " + row[0] for row in cursor.fetchall())
        finally:
            transaction.set_rollback(True)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE bench_claim")
    return plan


def measure(label: str) -> None:
    timings, count = [], 0
    for _ in range(REPEAT):
        with transaction.atomic():
            began = time.perf_counter()
            count = len(operations("default").claim(*CLAIM))
            timings.append((time.perf_counter() - began) * 1000)
            transaction.set_rollback(True)
    plan = explain()
    print(f"\n{label}: claim of up to {BATCH} rows took {statistics.median(timings):.2f} ms "
          f"(median of {REPEAT}, rows claimed: {count})\n{plan}")


def empty(vacuum: bool) -> None:
    Message.objects.all().delete()
    if vacuum:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {TABLE}")


def main() -> None:
    if connection.vendor != "postgresql":
        raise SystemExit("claim_cost.py measures PostgreSQL: set DATABASE_URL=postgres://...")
    call_command("migrate", verbosity=0)
    operations("default").steer_worker_planner([threading.current_thread().name])
    empty(vacuum=True)
    measure("0 waiting messages (table vacuumed)")
    from bench.tasks import noop

    noop.delay(0, 0.0)  # one real message, copied in SQL
    columns = [f.column for f in Message._meta.concrete_fields if not f.primary_key]
    names = ", ".join(columns)
    for rows in (BATCH, ROWS):  # as many as one claim takes, then a million
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {TABLE} ({names}) SELECT {names} FROM {TABLE}, "
                f"generate_series(%s, %s) WHERE id = (SELECT min(id) FROM {TABLE})",
                [Message.objects.count() + 1, rows]
            )
            cursor.execute(f"VACUUM ANALYZE {TABLE}")
        measure(f"{Message.objects.count():,} waiting messages")
    empty(vacuum=False)
    measure("0 waiting messages, just after deleting them all (dead index entries, no VACUUM yet)")
    empty(vacuum=True)


if __name__ == "__main__":
    main()
