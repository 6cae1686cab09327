"""Quick check of the enqueue rates on the database of DATABASE_URL (SQLite when unset).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_enqueue python bench/enqueue.py

Prints the median of ``--runs`` runs (default 3) of what bench/run.py calls "enqueue 1-by-1"
(``BENCH_SINGLE`` sequential ``delay()`` calls, each its own autocommit transaction) and "bulk
enqueue" (one ``group`` of ``BENCH_BULK`` signatures). No worker is started.

With ``--bare`` (PostgreSQL), each run also writes the same rows with bare psycopg into a copy of
the message table (``LIKE … INCLUDING ALL``: same columns, indexes and constraints): one prepared
``INSERT`` per row in autocommit, and one ``COPY`` of rows already built, in one transaction. That
is what the machine's database allows with no task code at all; the ratios show what djqueue's
own work costs, on machines whose speeds differ several times over.
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


SCRATCH = "bench_bare_message"


class Bare:
    """Bare psycopg writing ``rows`` (the messages djqueue wrote, without their ids) into a
    scratch copy of the message table, over Django's own (autocommit) psycopg connection."""

    def __init__(self, rows: list[tuple], columns: list[str]) -> None:
        connection.ensure_connection()
        self.raw = connection.connection
        self.rows = rows
        self.insert = (f"INSERT INTO {SCRATCH} ({', '.join(columns)}) "
                       f"VALUES ({', '.join(['%s'] * len(columns))})")
        self.copy = f"COPY {SCRATCH} ({', '.join(columns)}) FROM STDIN"
        self.raw.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
        self.raw.execute(f"CREATE TABLE {SCRATCH} (LIKE {Message._meta.db_table} INCLUDING ALL)")

    def _timed(self, count: int, write: object) -> float:
        self.raw.execute(f"TRUNCATE {SCRATCH}")
        began = time.perf_counter()
        write()  # type: ignore[operator]
        elapsed = time.perf_counter() - began
        if self.raw.execute(f"SELECT count(*) FROM {SCRATCH}").fetchone()[0] != count:
            raise RuntimeError("not every row was inserted")
        return count / elapsed

    def single(self) -> float:
        def write() -> None:
            for row in self.rows[:SINGLE]:
                self.raw.execute(self.insert, row, prepare=True)
        return self._timed(SINGLE, write)

    def bulk(self) -> float:
        def write() -> None:
            with self.raw.transaction(), self.raw.cursor().copy(self.copy) as copy:
                for row in self.rows:
                    copy.write_row(row)
        return self._timed(BULK, write)

    def drop(self) -> None:
        self.raw.execute(f"DROP TABLE {SCRATCH}")


def written() -> tuple[list[tuple], list[str]]:
    """The rows of the message table as djqueue wrote them, and their columns (all but the id)."""
    columns = [f.column for f in Message._meta.concrete_fields if not f.primary_key]
    rows = list(Message.objects.order_by("id").values_list(*columns))
    return rows, columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bare", action="store_true",
                        help="also the same rows written by bare psycopg (PostgreSQL)")
    options = parser.parse_args()
    runs = options.runs
    if options.bare and connection.vendor != "postgresql":
        parser.error("--bare needs DATABASE_URL set to PostgreSQL")
    call_command("migrate", verbosity=0)
    singles, bulks, bare_singles, bare_bulks = [], [], [], []
    bare = None
    for _ in range(runs):  # djqueue and bare psycopg interleaved: a noisy moment touches both
        singles.append(rate(SINGLE, single))
        bulks.append(rate(BULK, bulk))
        if options.bare:
            bare = bare or Bare(*written())
            bare_singles.append(bare.single())
            bare_bulks.append(bare.bulk())
    Message.objects.all().delete()
    print(
        f"{connection.vendor}: enqueue 1-by-1 {statistics.median(singles):,.0f}/s, "
        f"bulk {statistics.median(bulks):,.0f}/s (median of {runs})"
    )
    if bare is not None:
        bare.drop()
        single_ratio = statistics.median(singles) / statistics.median(bare_singles)
        bulk_ratio = statistics.median(bulks) / statistics.median(bare_bulks)
        print(
            f"bare psycopg, same rows: INSERT 1-by-1 {statistics.median(bare_singles):,.0f}/s, "
            f"COPY of built rows {statistics.median(bare_bulks):,.0f}/s (median of {runs}); "
            f"djqueue / bare: {single_ratio:.2f}x, {bulk_ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
