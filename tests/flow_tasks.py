"""Tasks of flow control's tests (tests/test_flow*.py). Each appends lines to
DJQUEUE_RECORD_FILE (see tests/fault_tasks.py): ``<key> <event> <time> <pid>``."""

from __future__ import annotations

import time

from djqueue import task
from djqueue.models import Message

from .fault_tasks import note


def mark(key: object, event: str, when: float) -> None:
    note(f"{key} {event} {when!r}")


@task(concurrency_limit=2)
def held(key: str, seconds: float) -> str:
    """Runs ``seconds``; at most two of one concurrency key at once, across the cluster."""
    mark(key, "start", time.time())
    time.sleep(seconds)
    mark(key, "end", time.time())
    return key


@task(bind=True, rate_limit="5/s", rate_limit_scope="cluster")
def paced(self, key: str) -> str:
    """Records when the database says it started (its message's ``started_at``, on the clock the
    cluster-wide rate is counted on)."""
    started = Message.objects.filter(task_id=self.request.id).values_list(
        "started_at", flat=True).first()
    mark(key, "start", started.timestamp())
    return key


@task(unique="waiting")
def once(key: str) -> str:
    mark(key, "start", time.time())
    return key
