"""Runs the measurements against djqueue on the database of DATABASE_URL; prints one JSON line
per run. Started by bench/run.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.common import DJQUEUE_WORKER, print_runs, start_worker_process  # noqa: E402
from bench.tasks import noop  # noqa: E402
from djqueue import group  # noqa: E402
from djqueue.models import Message, TaskResult  # noqa: E402


class DjqueueSystem:
    def reset(self) -> None:
        """Empty tables, as the other sides start from (pgqueuer truncates its tables, Redis is
        flushed): deleted rows would leave dead versions and index pages behind, so a run would
        depend on what earlier runs (or bench/claim_cost.py's million rows) left there."""
        if connection.vendor in ("postgresql", "mysql"):
            with connection.cursor() as cursor:
                for model in (Message, TaskResult):  # MySQL truncates one table at a time
                    cursor.execute(f"TRUNCATE {model._meta.db_table}")
        else:
            Message.objects.all().delete()
            TaskResult.objects.all().delete()

    def enqueue_one(self, key: int, enqueued_at: float) -> None:
        noop.delay(key, enqueued_at)

    def bulk_enqueue(self, count: int) -> None:
        group(noop.s(i, 0.0) for i in range(count)).apply_async()

    def start_worker(self, log: Path) -> subprocess.Popen:
        return start_worker_process(
            [sys.executable, *DJQUEUE_WORKER], log)


if __name__ == "__main__":
    call_command("migrate", verbosity=0)
    print_runs(DjqueueSystem(), int(sys.argv[1]))
