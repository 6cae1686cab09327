"""Task statistics: a worker's counts (in memory, written with its heartbeat), their upsert,
their pruning into totals, and the pruning of old worker rows; on the real database."""

from __future__ import annotations

import datetime
import signal

import pytest
from django.db.models import Sum
from django.utils.connection import ConnectionDoesNotExist
from django.utils import timezone

from djqueue.client.base import app
from djqueue.models import TaskStat, WorkerNode
from djqueue.stats import store
from djqueue.stats.models import BUCKET_FIELDS, ROLLUP_MINUTE
from djqueue.worker.execution import Job, Outcome
from djqueue.worker.loop import Worker
from djqueue.worker.tally import Tally
from example_project.demo.tasks import fail
from tasks import add

from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

NOON = 1_800_000_000.0  # a minute boundary (divisible by 60)


def outcome(task_name: str, state: str, runtime: float, queue: str = "q",
            action: str = "ack") -> Outcome:
    job = Job(1, "id", task_name, queue, 0, "application/json", "{}", 0, "w@host")
    return Outcome(job, state, action=action, runtime=runtime)


def totals(**filters: object) -> dict[str, float]:
    rows = TaskStat.objects.filter(**filters)
    return rows.aggregate(count=Sum("count"), runtime=Sum("runtime_sum"),
                          **{name: Sum(name) for name in BUCKET_FIELDS})


def test_counts_are_kept_per_minute_and_rewritten_not_added() -> None:
    now = [NOON + 5]
    tally = Tally(7200, None, clock=lambda: now[0])
    tally.add([outcome("t.a", "SUCCESS", 0.0004), outcome("t.a", "SUCCESS", 0.02),
               outcome("t.a", "FAILURE", 3.0), outcome("t.a", "SUCCESS", 1, action="requeue")])
    tally.flush("default", 7)
    tally.add([outcome("t.a", "SUCCESS", 0.0004)])
    tally.flush("default", 7)  # the same minute: its row now holds 3, not 2 + 3
    tally.flush("default", 7)  # nothing changed: nothing written
    success = TaskStat.objects.get(worker=7, state="SUCCESS")
    assert success.count == 3 and success.runtime_sum == pytest.approx(0.0208)
    assert (success.le_1ms, success.le_25ms, success.le_inf) == (2, 1, 0)
    assert success.minute == datetime.datetime.fromtimestamp(NOON, datetime.timezone.utc)
    failure = TaskStat.objects.get(worker=7, state="FAILURE")
    assert failure.count == 1 and failure.le_5000ms == 1  # 3 s: in the 5 s bucket
    # The next minute is a new row; a second worker writes rows of its own.
    now[0] += 60
    tally.add([outcome("t.a", "SUCCESS", 0.5)])
    tally.flush("default", 7)
    other = Tally(7200, None, clock=lambda: now[0])
    other.add([outcome("t.a", "SUCCESS", 0.5)])
    other.flush("default", 8)
    assert TaskStat.objects.count() == 4
    assert totals(state="SUCCESS")["count"] == 5


def test_a_failed_write_keeps_the_counts_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [NOON]
    tally = Tally(7200, None, clock=lambda: now[0])
    tally.add([outcome("t.a", "SUCCESS", 0.1)])
    now[0] += 60  # the minute is over: written and forgotten at the next flush
    with pytest.raises(ConnectionDoesNotExist):
        tally.flush("no-such-database", 1)
    tally.flush("default", 1)
    assert totals()["count"] == 1


def test_old_minutes_fold_into_totals_that_never_go_down() -> None:
    now = timezone.now().replace(second=0, microsecond=0)
    for age, worker, count in ((300, 1, 2), (200, 1, 3), (200, 2, 4), (5, 1, 1)):
        minute = now - datetime.timedelta(minutes=age)
        store.save("default", worker, {(minute, "q", "t.a", "SUCCESS"): [count, count * 0.5,
                                                                          count, *[0] * 15]})
    before = totals()
    assert store.rollup("default", now - datetime.timedelta(minutes=60)) == 3
    assert totals() == before  # the same sums, now in one totals row and the recent one
    rolled = TaskStat.objects.get(minute=ROLLUP_MINUTE)
    assert (rolled.worker, rolled.count, rolled.runtime_sum, rolled.le_1ms) == (0, 9, 4.5, 9)
    store.save("default", 1, {(now - datetime.timedelta(minutes=100), "q", "t.a", "SUCCESS"):
                              [1, 0.5, 1, *[0] * 15]})
    assert store.rollup("default", now - datetime.timedelta(minutes=60)) == 1
    assert TaskStat.objects.get(minute=ROLLUP_MINUTE).count == 10
    assert TaskStat.objects.count() == 2


def test_workers_gone_for_long_leave_the_table() -> None:
    old = timezone.now() - datetime.timedelta(hours=3)
    fields = dict(queues="celery", pool="solo", concurrency=1)
    gone = WorkerNode.objects.create(hostname="gone@host", pid=1, heartbeat_at=old,
                                     stopped_at=old, **fields)
    alive = WorkerNode.objects.create(hostname="alive@host", pid=2, heartbeat_at=timezone.now(),
                                      **fields)
    assert store.forget_workers("default", 3600) == 1
    assert list(WorkerNode.objects.values_list("pk", flat=True)) == [alive.pk]
    assert gone.pk != alive.pk


def test_a_worker_counts_what_it_settles() -> None:
    worker = Worker(app, pool="solo", poll_interval=0)
    worker.start()
    for i in range(3):
        add.apply_async((i, i), queue="celery")
    fail.delay("no")
    for _ in range(12):
        worker.loop()
    worker.tally.flush("default", worker.node_id)
    rows = {(r.task_name, r.state): r.count
            for r in TaskStat.objects.filter(worker=worker.node_id, queue="celery")}
    assert rows == {("tasks.add", "SUCCESS"): 3, ("example_project.demo.tasks.fail", "FAILURE"): 1}


def test_real_workers_write_their_counts_with_heartbeats_and_at_shutdown(start_worker) -> None:
    """One worker beats every half second: its counts arrive while it runs, and its first beat
    deletes a worker row silent for hours. The other beats every 100 s, so only its clean
    shutdown can have written what it counted."""
    long_ago = timezone.now() - datetime.timedelta(hours=3)
    old = WorkerNode.objects.create(hostname="old@host", pid=1, queues="celery", pool="solo",
                                    concurrency=1, heartbeat_at=long_ago, stopped_at=long_ago)
    beating = start_worker("-P", "threads", "-c", "2", "-Q", "beating", ready=False,
                           settings={"DJQUEUE_WORKER_LOST_TIMEOUT": 3})
    quiet = start_worker("-P", "threads", "-c", "2", "-Q", "quiet", ready=False,
                         settings={"DJQUEUE_WORKER_LOST_TIMEOUT": 600})
    for worker in (beating, quiet):
        worker.wait_for(" ready.", timeout=60)
    for queue in ("beating", "quiet"):
        sent = [add.apply_async((i, i), queue=queue) for i in range(20)]
        sent += [fail.apply_async(("no",), queue=queue) for _ in range(2)]
        for result in sent:
            result.get(timeout=60, propagate=False)

    def counted(queue: str) -> dict[str, int]:
        rows = TaskStat.objects.filter(queue=queue).values("state").annotate(n=Sum("count"))
        return {row["state"]: row["n"] for row in rows}

    try:  # a beat writes the counts, then prunes
        wait_until(lambda: counted("beating") == {"SUCCESS": 20, "FAILURE": 2}
                   and not WorkerNode.objects.filter(pk=old.pk).exists(), timeout=30)
    except AssertionError:
        raise AssertionError(f"counted {counted('beating')}, old worker row "
                             f"{WorkerNode.objects.filter(pk=old.pk).exists()}:\n"
                             f"{beating.log()}") from None
    assert counted("quiet") == {}  # nothing written before its first beat, 100 s away
    quiet.send(signal.SIGTERM)
    assert quiet.wait(timeout=60) == 0, quiet.log()
    assert counted("quiet") == {"SUCCESS": 20, "FAILURE": 2}, quiet.log()
