"""The benchmark's tasks for djqueue: each records when it starts (bench.common.record_start)."""

import time

from djqueue import task
from djqueue.models import Message

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


@task(name="bench.flow_paced", bind=True, rate_limit="60/m", rate_limit_scope="cluster")
def flow_paced(self, key):
    """bench/flow.py: a cluster-wide rate; records its start on its own clock and on the
    database's (its message's ``started_at``, the clock the limit counts on)."""
    started = Message.objects.filter(task_id=self.request.id).values_list(
        "started_at", flat=True).first()
    record_start(key, started.timestamp())
    return key


@task(name="bench.flow_held", concurrency_limit=2)
def flow_held(key, seconds):
    """bench/flow.py: at most two of one concurrency key at once; records ``key end start``."""
    start = time.time()
    time.sleep(seconds)
    record_start(key, start)
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
