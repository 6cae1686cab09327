"""The same task on Celery 5 with Redis as broker and result backend (run in bench/.venv-celery)."""

import os

from celery import Celery

from .common import record_start

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
app = Celery("bench", broker=REDIS, backend=REDIS)


@app.task(name="bench.noop")
def noop(key, enqueued_at):
    record_start(key, enqueued_at)
    return key
