"""The broker and the worker loop, in-process (solo pool), against the real database."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from djqueue import states
from djqueue.broker import operations
from djqueue.client.base import app
from djqueue.worker.execution import execute
from djqueue.exceptions import (
    DecodeError, EncodeError, NotRegistered, ResultBackendNotConfigured, TaskRevokedError,
)
from djqueue.models import Message, TaskResult
from djqueue.result import AsyncResult
from djqueue.worker.loop import Worker
from example_project.demo.tasks import DemoError, fail
from tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker() -> Worker:
    w = Worker(app, pool="solo", poll_interval=0, hostname="test@%h")
    w.start()
    return w


def drain(worker: Worker, rounds: int = 5) -> None:
    for _ in range(rounds):
        worker.loop()


def test_walk_through_in_process(worker: Worker) -> None:
    result = add.delay(4, 4)
    assert not result.ready() and result.state == states.PENDING
    drain(worker)
    assert result.ready() and result.successful()
    assert result.get(timeout=1) == 8
    assert result.result == 8 and result.info == 8
    assert result.date_done is not None
    assert Message.objects.count() == 0  # acknowledged messages leave the table
    row = TaskResult.objects.get(task_id=result.id)
    assert (row.task_name, row.args, row.worker, row.queue) == (
        "tasks.add", "[4, 4]", worker.hostname, "celery")
    result.forget()
    assert AsyncResult(result.id).state == states.PENDING


def test_failure_re_raises_the_task_exception(worker: Worker) -> None:
    result = fail.delay("boom")
    drain(worker)
    assert result.failed() and result.state == states.FAILURE
    with pytest.raises(DemoError, match="boom"):
        result.get(timeout=1)
    assert isinstance(result.get(propagate=False), DemoError)
    assert 'raise DemoError(message)' in result.traceback


def test_get_times_out() -> None:
    from djqueue.exceptions import TimeoutError

    result = add.delay(1, 1)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.05)


def test_unknown_id_is_pending() -> None:
    assert AsyncResult("no-such-id").state == states.PENDING


def test_enqueue_is_part_of_the_callers_transaction(worker: Worker) -> None:
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            rolled_back = add.delay(1, 2)
            assert Message.objects.filter(task_id=rolled_back.id).exists()
            raise RuntimeError("roll back")
    assert not Message.objects.exists()
    with transaction.atomic():
        committed = add.delay(2, 3)
    drain(worker)
    assert committed.get(timeout=1) == 5
    assert AsyncResult(rolled_back.id).state == states.PENDING


def statements(captured: CaptureQueriesContext) -> list[str]:
    """SQL statements run, leaving out transaction control (BEGIN/COMMIT) that Django also logs."""
    return [q["sql"] for q in captured if q["sql"].split()[0] not in {"BEGIN", "COMMIT"}]


#: Per vendor: statements of the first loop and of the second, and of a 50-task claim, start and
#: finish. MySQL's claim is two (the locking read, then the updates), after a look without locks
#: when it is not part of a round; each settling statement one call of two statements (SELECT …
#: FOR UPDATE; UPDATE or DELETE).
PINNED = {"postgresql": (3, 2, 1, 1, 1), "sqlite": (4, 4, 1, 1, 2), "mysql": (5, 4, 3, 1, 2)}


def test_query_counts_are_pinned(worker: Worker) -> None:
    pinned = PINNED[connection.vendor]
    with CaptureQueriesContext(connection) as enqueue:
        add.delay(1, 1)
    assert len(statements(enqueue)) == 1, statements(enqueue)
    # The solo pool, one task. First loop: a claim; a round that marks it started and claims
    # again (one statement on PostgreSQL); the task runs; the empty claim asks when the next
    # delayed message is due. Second loop: one round stores the result, acknowledges and claims.
    with CaptureQueriesContext(connection) as first:
        worker.loop()
    with CaptureQueriesContext(connection) as second:
        worker.loop()
    assert len(statements(first)) == pinned[0], statements(first)
    assert len(statements(second)) == pinned[1], statements(second)
    assert TaskResult.objects.get().state == states.SUCCESS and not Message.objects.exists()

    # A batch costs the same statements whatever its size.
    for i in range(50):
        add.delay(i, i)
    with CaptureQueriesContext(connection) as claim:
        claimed = operations("default").claim(["celery"], 50, "test@host", worker.node_id, 60)
    jobs = [worker.job_for(message) for message in claimed]
    with CaptureQueriesContext(connection) as start:
        operations("default").start([job.message_id for job in jobs], lease_seconds=60)
    outcomes = [execute(job) for job in jobs]
    with CaptureQueriesContext(connection) as finish:
        worker.finish(outcomes)
    counts = [len(statements(c)) for c in (claim, start, finish)]
    # Storing 50 results and acknowledging 50 messages: one statement on PostgreSQL, two on SQLite.
    assert (len(claimed), *counts) == (50, *pinned[2:]), statements(finish)
    assert TaskResult.objects.filter(state=states.SUCCESS).count() == 51
    assert not Message.objects.exists()


def test_priority_then_age_order(worker: Worker, record_file) -> None:
    from example_project.demo.tasks import record

    record.apply_async(("low-1",), priority=0)
    record.apply_async(("high",), priority=9)
    record.apply_async(("low-2",), priority=0)
    record.apply_async(("mid",), priority=5)
    drain(worker)
    keys = [line.split()[0] for line in record_file.read_text().splitlines()]
    assert keys == ["high", "mid", "low-1", "low-2"]


def test_worker_consumes_only_its_queues(record_file) -> None:
    from example_project.demo.tasks import record

    other = record.apply_async(("other",), queue="other")
    default = record.apply_async(("default",))
    w = Worker(app, pool="solo", poll_interval=0, queues=["celery"])
    w.start()
    drain(w)
    assert default.successful() and other.state == states.PENDING
    w2 = Worker(app, pool="solo", poll_interval=0, queues=["other", "more"])
    w2.start()
    drain(w2)
    assert other.successful()


def test_countdown_and_eta_wait_in_the_table(worker: Worker) -> None:
    later = add.apply_async((1, 1), countdown=60)
    at = add.apply_async((2, 2), eta=timezone.now() + datetime.timedelta(minutes=5))
    drain(worker)
    assert later.state == at.state == states.PENDING
    assert Message.objects.filter(state="ready").count() == 2
    Message.objects.update(available_at=timezone.now() - datetime.timedelta(seconds=1))
    drain(worker)
    assert later.get(timeout=1) == 2 and at.get(timeout=1) == 4


def test_expired_message_is_revoked_not_run(worker: Worker, record_file) -> None:
    from example_project.demo.tasks import record

    result = record.apply_async(("never",), expires=timezone.now() - datetime.timedelta(seconds=1))
    fresh = record.apply_async(("fresh",), expires=60)
    drain(worker)
    assert result.state == states.REVOKED
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)
    assert fresh.successful()
    assert record_file.read_text().split()[0] == "fresh"
    assert not Message.objects.exists()


def test_unknown_task_is_set_aside_with_a_clear_error(worker: Worker) -> None:
    result = app.send_task("nobody.defines.this", args=[1])
    drain(worker)
    assert result.state == states.FAILURE
    with pytest.raises(NotRegistered, match="nobody.defines.this"):
        result.get(timeout=1)
    message = Message.objects.get(task_id=result.id)  # kept, not lost
    assert message.state == "rejected" and "nobody.defines.this" in message.error


def test_undecodable_body_is_set_aside(worker: Worker) -> None:
    result = add.delay(1, 1)
    Message.objects.filter(task_id=result.id).update(body="{corrupt")
    drain(worker)
    with pytest.raises(DecodeError):
        result.get(timeout=1)
    assert Message.objects.get(task_id=result.id).state == "rejected"


def test_unserialisable_arguments_fail_at_enqueue_and_insert_nothing() -> None:
    with pytest.raises(EncodeError, match="not JSON serializable"):
        add.delay(object(), 1)
    assert not Message.objects.exists()


def test_unserialisable_return_value_is_a_failure(worker: Worker) -> None:
    @app.task(name="tests.returns_object")
    def returns_object() -> object:
        return object()

    result = returns_object.delay()
    drain(worker)
    with pytest.raises(EncodeError):
        result.get(timeout=1)


def test_send_task_by_name(worker: Worker) -> None:
    result = app.send_task("tasks.add", args=[4, 4])
    drain(worker)
    assert result.get(timeout=1) == 8


def test_track_started(worker: Worker) -> None:
    seen = {}

    @app.task(name="tests.look_at_own_state", bind=True, track_started=True)
    def look(self) -> str:
        seen["state"] = AsyncResult(self.request.id).state
        return self.request.id

    result = look.delay()
    drain(worker)
    assert seen["state"] == states.STARTED
    assert result.get(timeout=1) == result.id


def test_without_result_backend_tasks_run_and_reads_say_why(
    settings, worker: Worker, record_file
) -> None:
    from example_project.demo.tasks import record

    settings.CELERY_RESULT_BACKEND = None
    w = Worker(app, pool="solo", poll_interval=0)
    w.start()
    result = record.delay("ran")
    drain(w)
    assert record_file.read_text().split()[0] == "ran"
    assert not TaskResult.objects.exists()
    for read in (lambda: result.state, lambda: result.get(timeout=1), result.ready):
        with pytest.raises(ResultBackendNotConfigured, match='CELERY_RESULT_BACKEND = "database"'):
            read()


def test_ignore_result(worker: Worker) -> None:
    @app.task(name="tests.ignored", ignore_result=True)
    def ignored() -> int:
        return 1

    result = ignored.delay()
    drain(worker)
    assert result.state == states.PENDING
    assert not Message.objects.exists()


def test_autoretry_backoff_sets_the_next_available_at(worker: Worker) -> None:
    @app.task(name="tests.backs_off", autoretry_for=(ValueError,), retry_backoff=4,
              retry_jitter=False, max_retries=5)
    def backs_off() -> None:
        raise ValueError("not yet")

    def retried_at(backoff: float) -> Message:
        """Drain; the retry was decided between the two readings of the clock around it, so
        its time is within them, ``backoff`` s later, however long the drain took."""
        before = timezone.now()
        drain(worker)
        after = timezone.now()
        message = Message.objects.get(task_id=result.id)
        pause = datetime.timedelta(seconds=backoff)
        assert before + pause <= message.available_at <= after + pause
        return message

    result = backs_off.delay()
    message = retried_at(4)  # retry_backoff * 2 ** retries, retries = 0
    assert (message.state, message.retries) == ("ready", 1)
    assert result.state == states.RETRY
    Message.objects.filter(pk=message.pk).update(available_at=timezone.now())
    assert retried_at(8).retries == 2  # 4 * 2 ** 1
