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


@task(name="bench.member")
def member(key):
    """bench/canvas.py's group and chord member."""
    return key


@task(name="bench.total")
def total(results):
    """bench/canvas.py's chord body: how many results it was given."""
    return len(results)


@task(name="bench.step")
def step(value):
    """bench/canvas.py's chain step."""
    return value + 1
