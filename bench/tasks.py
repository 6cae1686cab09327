"""The benchmark's task for djqueue: records when it starts, returns its argument."""

from djqueue import task

from .common import record_start


@task(name="bench.noop")
def noop(key, enqueued_at):
    record_start(key, enqueued_at)
    return key
