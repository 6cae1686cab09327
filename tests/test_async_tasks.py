"""``async def`` tasks, and enqueueing and waiting from async code (README, "Async tasks and
async code"): in-process on every Django line and database, and against real workers."""

from __future__ import annotations

import os
import signal
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections, transaction
from django.http import JsonResponse
from django.test import AsyncClient
from django.urls import path

from djqueue import states
from djqueue.client.base import app
from djqueue.exceptions import (
    SoftTimeLimitExceeded, TimeLimitExceeded, TimeoutError, WorkerLostError,
)
from djqueue.models import Message
from djqueue.result import AsyncResult
from djqueue.worker.loop import Worker
from example_project.demo.tasks import record
from tasks import add

from . import async_tasks
from .conftest import executions, wait_until


@pytest.fixture
def worker() -> Worker:
    w = Worker(app, pool="solo", poll_interval=0, hostname="test@%h")
    w.start()
    return w


def drain(worker: Worker, rounds: int = 5) -> None:
    for _ in range(rounds):
        worker.loop()


@pytest.mark.django_db(transaction=True)
def test_async_task_runs_on_one_loop_kept_across_tasks_with_its_request(worker: Worker,
                                                                        record_file) -> None:
    first = async_tasks.async_identity.delay("one")
    second = async_tasks.async_identity.delay("two")
    total = async_tasks.async_add.delay(2, 3)
    drain(worker)
    one, two = first.get(timeout=1), second.get(timeout=1)
    assert total.get(timeout=1) == 5
    assert (one["id"], two["id"]) == (first.id, second.id)  # self.request inside the coroutine
    assert one["loop"] == two["loop"]  # the process's loop, not one per task
    assert executions(record_file) == {"one": 1, "two": 1}


@pytest.mark.django_db(transaction=True)
def test_what_an_async_task_sends_is_among_its_children(worker: Worker) -> None:
    result = async_tasks.async_sends.delay(3)
    drain(worker)
    sent = AsyncResult(result.get(timeout=1))
    assert result.children == [sent] and sent.get(timeout=1) == 6


@pytest.mark.django_db(transaction=True)
def test_async_task_uses_the_orm_as_django_documents(worker: Worker) -> None:
    counted = _count_messages.delay()
    drain(worker)
    assert counted.get(timeout=1) == 1  # itself: its message is still in the table


@app.task(name="tests.test_async_tasks.count_messages")
async def _count_messages() -> int:
    count = await Message.objects.acount()
    # The async ORM's thread keeps its connection, as in any worker; closed here so that the
    # test database can be dropped at the end of the run.
    await sync_to_async(connections.close_all)()
    return count


@pytest.mark.django_db(transaction=True)
def test_soft_then_hard_limit_of_an_async_task_in_process(worker: Worker, record_file) -> None:
    soft = async_tasks.async_cleanup_on_soft_limit.apply_async(("s", 30), soft_time_limit=0.1)
    both = async_tasks.async_goes_on_after_soft_limit.apply_async(
        ("b",), soft_time_limit=0.1, time_limit=0.3)
    drain(worker)
    assert isinstance(soft.get(timeout=1, propagate=False), SoftTimeLimitExceeded)
    assert isinstance(both.get(timeout=1, propagate=False), TimeLimitExceeded)
    assert executions(record_file) == {"s-cancelled": 1, "b-soft": 1}


def test_eager_apply_runs_an_async_task_to_its_end() -> None:
    assert async_tasks.async_add.apply((1, 2)).get() == 3


@pytest.mark.django_db(transaction=True)
def test_adelay_aapply_async_and_aget_from_async_code(worker: Worker) -> None:
    async def enqueue() -> tuple[AsyncResult, AsyncResult]:
        return (await add.adelay(2, 2),
                await add.aapply_async((3, 3), countdown=0, priority=5))

    first, second = async_to_sync(enqueue)()
    assert Message.objects.filter(task_id__in=[first.id, second.id]).count() == 2
    drain(worker)

    async def wait() -> list[int]:
        return [await first.aget(timeout=5), await second.aget(timeout=5)]

    assert async_to_sync(wait)() == [4, 6]


@pytest.mark.django_db(transaction=True)
def test_aget_times_out_and_propagates_failures(worker: Worker) -> None:
    waiting = add.delay(1, 1)
    with pytest.raises(TimeoutError, match=waiting.id):
        async_to_sync(waiting.aget)(timeout=0.1)
    failing = async_tasks.async_add.delay(1, "x")
    drain(worker)
    with pytest.raises(TypeError):
        async_to_sync(failing.aget)(timeout=5)
    assert isinstance(async_to_sync(failing.aget)(timeout=5, propagate=False), TypeError)


@pytest.mark.django_db(transaction=True)
def test_async_enqueue_commits_at_once_and_sync_atomic_blocks_still_decide() -> None:
    """Async code runs in autocommit: the message is there at once. A transaction is opened by
    sync code, which decides for what is enqueued inside it."""
    sent = async_to_sync(add.adelay)(1, 2)
    assert Message.objects.filter(task_id=sent.id).exists()

    def rolled_back() -> None:
        with transaction.atomic():
            add.delay(5, 5)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        async_to_sync(sync_to_async(rolled_back, thread_sensitive=True))()
    assert Message.objects.count() == 1


async def enqueue_view(request):
    result = await add.adelay(20, 22)
    return JsonResponse({"id": result.id})


urlpatterns = [path("enqueue/", enqueue_view)]


@pytest.mark.urls("tests.test_async_tasks")
@pytest.mark.django_db(transaction=True)
def test_async_view_enqueues_without_synchronous_only_operation(worker: Worker) -> None:
    response = async_to_sync(AsyncClient().get)("/enqueue/")
    assert response.status_code == 200
    drain(worker)
    assert AsyncResult(response.json()["id"]).get(timeout=1) == 42


# Real workers: the prefork pool's children, each with its loop.

ASYNC_ENV = {"DJQUEUE_EXTRA_IMPORTS": "tests.fault_tasks,tests.async_tasks"}


def test_async_tasks_in_prefork_children_together_and_with_time_limits(start_worker,
                                                                       record_file) -> None:
    start_worker("-c", "1", env=ASYNC_ENV)
    first, second = (async_tasks.async_identity.delay(k) for k in ("a", "b"))
    one, two = first.get(timeout=20), second.get(timeout=20)
    assert (one["pid"], one["loop"]) == (two["pid"], two["loop"])  # one child, one loop
    with transaction.atomic():  # seen at once: a worker takes what it is woken for
        naps = [async_tasks.async_nap.delay(f"nap{i}", 0.5) for i in range(10)]
    ends = [r.get(timeout=30) for r in naps]
    lines = record_file.read_text().split()[::2]
    starts = [i for i, key in enumerate(lines) if key.startswith("nap") and key.endswith("start")]
    first_end = min(i for i, key in enumerate(lines) if key.startswith("nap") and key.endswith("end"))
    assert len(starts) == 10 and max(starts) < first_end  # all ten began before one ended
    assert max(ends) - min(ends) < 0.5  # they napped side by side, in one process
    soft = async_tasks.async_cleanup_on_soft_limit.apply_async(("soft", 30), soft_time_limit=0.5)
    with pytest.raises(SoftTimeLimitExceeded):
        soft.get(timeout=20)
    assert executions(record_file)["soft-cancelled"] == 1  # it could clean up
    hard = async_tasks.async_cleanup_on_soft_limit.apply_async(("hard", 30), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=20)
    after = async_tasks.async_identity.delay("after").get(timeout=20)
    assert (after["pid"], after["loop"]) == (one["pid"], one["loop"])  # cancelled, not killed


def test_async_tasks_revoked_alone_lost_together_and_a_blocked_loop_killed(start_worker, record_file) -> None:
    worker = start_worker("-c", "1", env=ASYNC_ENV)
    with transaction.atomic():
        # The one to revoke naps long enough that it cannot end before the revocation arrives
        # on a loaded machine (it did with 3 s).
        naps = [async_tasks.async_nap.delay(f"n{i}", 30 if i == 1 else 3) for i in range(4)]
    wait_until(lambda: executions(record_file)["n3-start"] == 1, what="the naps to begin")
    naps[1].revoke(terminate=True)
    assert naps[1].get(timeout=20, propagate=False) is not None
    assert naps[1].state == states.REVOKED
    assert all(r.get(timeout=20) for r in (naps[0], naps[2], naps[3]))  # the others went on
    assert executions(record_file)["n1-end"] == 0
    with transaction.atomic():
        doomed = [async_tasks.async_nap.delay(f"d{i}", 30) for i in range(3)]
    wait_until(lambda: executions(record_file)["d2-start"] == 1, what="the batch to begin")
    child = int(next(line.split()[1] for line in record_file.read_text().splitlines()
                     if line.startswith("d0-start")))
    os.kill(child, signal.SIGKILL)  # all three began: lost with their process, none run again
    for result in doomed:
        assert isinstance(result.get(timeout=20, propagate=False), WorkerLostError)
    assert [executions(record_file)[f"d{i}-start"] for i in range(3)] == [1, 1, 1]
    blocked = async_tasks.async_blocks.apply_async((60,), time_limit=1)
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        blocked.get(timeout=30)
    assert time.monotonic() - started < 25
    worker.wait_for("Hard time limit (1")  # 1s or 1.0s, as the database keeps it
    assert async_tasks.async_add.delay(1, 1).get(timeout=20) == 2  # a new child took over
    assert record.delay("sync").get(timeout=20) == "sync"
