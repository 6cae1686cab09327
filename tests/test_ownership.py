"""A worker runs and settles only what the database confirms it still holds (in-process, with the
solo pool): the reliability issue's duplicates after an outage longer than the lease, late outcomes
overwriting what recovery decided, and the bound on redeliveries of acks_late tasks."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from djqueue.broker import operations
from djqueue.worker import heartbeat
from djqueue import states
from djqueue.client.base import app
from djqueue.worker.execution import Job, execute, lost
from djqueue.models import Message, TaskResult
from djqueue.result import AsyncResult
from djqueue.worker.loop import Worker
from example_project.demo.tasks import record
from tasks import add

from .conftest import executions

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker() -> Worker:
    app.conf.CELERY_RESULT_BACKEND = "database"
    w = Worker(app, pool="solo", poll_interval=0, hostname="a@test")
    w.start()
    return w


def _expire(**filters: object) -> None:
    Message.objects.filter(**filters).update(
        lease_until=timezone.now() - datetime.timedelta(seconds=5))


def test_a_reserved_message_recovered_by_another_worker_is_not_run_here(
    worker: Worker, record_file: Path
) -> None:
    result = record.delay("once")
    [held] = operations("default").claim(["celery"], 10, worker.hostname, worker.node_id, 60)
    worker._reserved.append(held)  # claimed, not yet started: what a prefetching worker holds
    _expire(id=held.id)  # the database was away longer than the lease …
    # … and another worker's heartbeat recovered it:
    operations("default").recover_expired_leases()
    [other] = operations("default").claim(["celery"], 10, "b@test", 424242, 60)
    assert other.id == held.id

    worker.loop()  # the start is not confirmed: the message is b's now

    assert executions(record_file)["once"] == 0
    message = Message.objects.get(task_id=result.id)
    assert (message.state, message.owner) == ("reserved", 424242)
    assert not worker._reserved and not worker.pool.running()


def test_a_reserved_message_recovered_and_claimed_again_here_runs_once(
    worker: Worker, record_file: Path
) -> None:
    """The database was away longer than the lease; recovery put a reserved message back and
    this worker's own claim took it again: it held it twice, and ran it twice (found by the
    outage test: a task without acks_late run twice)."""
    record.delay("first")
    record.delay("once")
    first, held = operations("default").claim(["celery"], 10, worker.hostname, worker.node_id,
                                              60)
    worker._reserved.extend([first, held])  # the solo pool takes one: the second waits
    _expire(id=held.id)
    operations("default").recover_expired_leases()

    for _ in range(6):
        worker.loop()

    assert (executions(record_file)["first"], executions(record_file)["once"]) == (1, 1)
    assert not Message.objects.exists()


def test_a_late_outcome_does_not_overwrite_what_recovery_decided(worker: Worker) -> None:
    result = add.delay(2, 3)
    [held] = operations("default").claim(["celery"], 10, worker.hostname, worker.node_id, 60)
    operations("default").start([held.id], owner=worker.node_id, lease_seconds=60)
    job = worker.job_for(held)
    _expire(id=held.id)
    assert heartbeat.recover("default", app.backend.store, "json") == 1  # WorkerLostError
    assert AsyncResult(result.id).state == states.FAILURE

    outcome = execute(job)  # the old holder finishes after all
    assert outcome.state == states.SUCCESS
    worker.finish([outcome])

    stored = AsyncResult(result.id)
    assert stored.state == states.FAILURE and "WorkerLostError" in repr(stored.result)
    message = Message.objects.get(task_id=result.id)  # the set-aside row is still there
    assert message.state == "rejected" and message.owner is None


def test_a_recovered_message_can_still_be_settled_by_its_new_holder(worker: Worker) -> None:
    result = add.delay(2, 3)
    [held] = operations("default").claim(["celery"], 10, "b@test", 424242, lease_seconds=-1)
    operations("default").recover_expired_leases()
    for _ in range(3):  # claims, starts and runs it, then stores its result
        worker.loop()
    assert AsyncResult(result.id).get(timeout=1) == 5
    assert not Message.objects.filter(id=held.id).exists()


def test_deliveries_are_counted_and_bounded_in_recovery() -> None:
    result = add.delay(1, 1)
    message_id = Message.objects.get(task_id=result.id).id
    Message.objects.filter(id=message_id).update(acks_late=True)
    for attempt in (1, 2):
        [held] = operations("default").claim(["celery"], 10, "a@test", 1, 60)
        operations("default").start([held.id], [held.id], owner=1, lease_seconds=60)
        assert Message.objects.get(id=message_id).deliveries == attempt
        _expire(id=message_id)
        found = operations("default").recover_expired_leases(max_deliveries=2)
        if attempt == 1:
            assert not found and Message.objects.get(id=message_id).state == "ready"
    [gone] = found
    assert (gone.task_id, gone.acks_late, gone.deliveries) == (result.id, True, 2)
    message = Message.objects.get(id=message_id)
    assert message.state == "rejected" and message.error.endswith("2 times")


def test_a_retry_counts_deliveries_afresh_and_a_job_never_begun_does_not_count() -> None:
    add.delay(1, 1)
    [held] = operations("default").claim(["celery"], 10, "a@test", 1, 60)
    operations("default").start([held.id], owner=1, lease_seconds=60)
    # Queued in a child that died: never began.
    operations("default").unstart([held.id], owner=1)
    assert Message.objects.get(id=held.id).deliveries == 0
    [held] = operations("default").claim(["celery"], 10, "a@test", 1, 60)
    operations("default").start([held.id], owner=1, lease_seconds=60)
    operations("default").retry(held.id, timezone.now(), None, owner=1)
    message = Message.objects.get(id=held.id)
    assert (message.deliveries, message.retries, message.state) == (0, 1, "ready")


def test_a_lost_acks_late_job_is_set_aside_after_max_deliveries() -> None:
    job = Job(1, "t-1", "tasks.add", "celery", 0, "application/json", "{}", 0, "a@test",
              acks_late=True, deliveries=4)
    assert lost(job, "Worker exited prematurely: signal 9 (SIGKILL).", "json", 5).action == "requeue"
    last = lost(dataclasses.replace(job, deliveries=5), "Worker exited prematurely.", "json", 5)
    assert last.action == "reject" and last.state == states.FAILURE
    assert "WorkerLostError" in last.result_repr and "5 times" in last.result_repr
    assert lost(dataclasses.replace(job, deliveries=50), "gone", "json", None).action == "requeue"


@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="a JSON document with Infinity is refused as a DataError on PostgreSQL")
def test_a_round_the_database_refuses_is_settled_one_outcome_at_a_time(worker: Worker) -> None:
    good, bad = add.delay(1, 1), add.delay(2, 2)
    claimed = operations("default").claim(["celery"], 10, worker.hostname, worker.node_id, 60)
    operations("default").start([m.id for m in claimed], owner=worker.node_id, lease_seconds=60)
    outcomes = {m.task_id: execute(worker.job_for(m)) for m in claimed}
    outcomes[bad.id].runtime = float("inf")  # json.dumps writes Infinity, which jsonb refuses

    worker.finish(list(outcomes.values()))

    assert AsyncResult(good.id).get(timeout=1) == 2
    refused = AsyncResult(bad.id)
    assert refused.state == states.FAILURE and "could not be stored" in str(refused.result)
    assert not Message.objects.exists()
    assert TaskResult.objects.count() == 2
