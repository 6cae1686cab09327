"""The benchmark's tasks for djqueue: each records when it starts (bench.common.record_start)."""

import time

from djqueue import task

from .common import record_start


@task(name="bench.noop")
def noop(key, enqueued_at):
    record_start(key, enqueued_at)
    return key


@task(name="bench.soak")
def soak(key, seconds):
    """bench/soak.py's task: records its start, works ``seconds``, returns its key."""
    record_start(key, 0.0)
    time.sleep(seconds)
    return key


@task(name="bench.soak_late", acks_late=True)
def soak_late(key, seconds):
    """The same with acks_late: run again if its process is lost."""
    record_start(key, 0.0)
    time.sleep(seconds)
    return key
