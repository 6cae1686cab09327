"""The claim across several queues and the idle worker's next-due question, on the real database."""

from __future__ import annotations

import pytest

from djqueue.broker import operations
from djqueue.broker.rows import StartNow
from tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def test_claim_over_several_queues_keeps_priority_then_age_and_the_limit() -> None:
    low = [add.apply_async((i, i), queue="a").id for i in range(3)]
    high = [add.apply_async((i, i), queue="b", priority=5).id for i in range(2)]
    add.apply_async((0, 0), queue="elsewhere", priority=9)
    claimed = operations("default").claim(["a", "b"], 3, "test@host", None, 60)
    assert [m.task_id for m in claimed] == [*high, low[0]]
    rest = operations("default").claim(["a", "b"], 10, "test@host", None, 60)
    assert [m.task_id for m in rest] == low[1:]


def test_next_due_is_the_earliest_delayed_message_of_those_queues() -> None:
    broker = operations("default")
    assert broker.next_due(["celery"]) is None
    add.apply_async((1, 1), countdown=-60)  # long overdue: the claim's, not a delayed message
    add.apply_async((1, 1), countdown=300)
    add.apply_async((1, 1), countdown=60)
    add.apply_async((1, 1), countdown=5, queue="other")
    assert 55 < broker.next_due(["celery"]) < 61  # julianday arithmetic is not exact
    assert 0 < broker.next_due(["celery", "other"]) < 6


def test_next_due_counts_a_message_that_fell_due_since_the_empty_claim() -> None:
    """The idle worker asks after a claim that found nothing; a message that fell due in between
    is due now (0 s), not "none delayed" (which would let the worker sleep a whole interval)."""
    broker = operations("default")
    add.apply_async((1, 1), countdown=300)
    add.apply_async((1, 1), countdown=-1)
    assert broker.next_due(["celery"]) == 0.0


def test_claim_marks_started_what_the_pool_takes_at_once() -> None:
    """Among the first ``idle`` rows, known tasks start at once; among the first
    ``idle + queued``, short ones; acks_late is recorded for the names given; the rest are
    reserved (they will be marked started when handed to the pool)."""
    from djqueue.models import Message
    from example_project.demo.tasks import record

    ids = [add.delay(1, 1).id, record.delay("x").id, add.delay(2, 2).id, add.delay(3, 3).id,
           record.delay("y").id]
    start = StartNow(idle=2, names=["tasks.add"], queued=2, short_names=["tasks.add"],
                            acks_late_names=["tasks.add"])
    claimed = operations("default").claim(["celery"], 10, "test@host", None, 60, start)
    assert [m.task_id for m in claimed] == ids
    started = [m.task_id for m in claimed if m.started]
    assert started == [ids[0], ids[2], ids[3]]  # rn 1 (known); rn 3 and 4 (short, within 2 + 2)
    rows = {m.task_id: m for m in Message.objects.all()}
    assert {i for i in ids if rows[i].state == "started"} == set(started)
    assert all(rows[i].started_at is not None and rows[i].acks_late for i in started)
    assert {rows[i].state for i in ids if i not in started} == {"reserved"}


def test_hot_statements_are_prepared_on_postgresql() -> None:
    """The worker's round runs as a prepared statement (parsed and planned once per
    connection, once it has run a few times), unless the project says it sits behind a pooler
    that cannot keep them."""
    from django.db import connection

    from djqueue.client.base import app
    from djqueue.broker.postgresql import PREPARE_AFTER
    from djqueue.worker.loop import Worker

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")

    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE "
                           "'%%djqueue_message%%'")
            return cursor.fetchone()[0]

    worker = Worker(app, pool="solo", poll_interval=0)
    worker.start()
    connection.close()  # a fresh session: nothing prepared yet
    assert prepared() == 0
    for _ in range(PREPARE_AFTER + 1):  # statements are prepared once run that often
        add.delay(1, 1)
        worker.loop()
    assert prepared() > 0
    connection.close()
    connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = True
    try:
        for _ in range(PREPARE_AFTER + 1):
            add.delay(2, 2)
            worker.loop()
        assert prepared() == 0
    finally:
        del connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"]


def test_a_bloated_message_table_is_vacuumed() -> None:
    import time

    from django.db import connection

    from djqueue import group
    from djqueue.broker.base import DEAD_ROWS
    from djqueue.models import Message

    if connection.vendor != "postgresql":
        pytest.skip("VACUUM is PostgreSQL's")
    broker = operations("default")
    assert not broker.vacuum_if_bloated()  # nothing dead: left to autovacuum
    group(add.s(i, i) for i in range(DEAD_ROWS + 2000)).apply_async()
    Message.objects.all().delete()
    deadline = time.monotonic() + 5  # the statistics arrive within about a second
    while not broker.vacuum_if_bloated():
        assert time.monotonic() < deadline, "the dead rows were never vacuumed"
        time.sleep(0.2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'djqueue_message'")
        assert "autovacuum_vacuum_threshold=5000" in cursor.fetchone()[0]


def test_a_worker_turning_idle_after_a_burst_vacuums_at_once(start_worker) -> None:
    """With heartbeats 10 s apart, the vacuum that follows a burst comes from the worker turning
    idle, not from the next beat."""
    import time

    from django.db import connection

    from djqueue import group, states
    from djqueue.broker.base import DEAD_ROWS
    from djqueue.models import TaskResult

    if connection.vendor != "postgresql":
        pytest.skip("VACUUM is PostgreSQL's")

    def vacuums() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT vacuum_count FROM pg_stat_user_tables "
                           "WHERE relname = 'djqueue_message'")
            return cursor.fetchone()[0]

    start_worker("-c", "2", env={"DJQUEUE_WORKER_LOST_TIMEOUT": "60"})
    time.sleep(0.5)  # past its first beat
    before = vacuums()
    tasks = DEAD_ROWS // 2 + 500
    group(add.s(i, i) for i in range(tasks)).apply_async()
    deadline = time.monotonic() + 60
    while TaskResult.objects.filter(state=states.SUCCESS).count() < tasks:
        assert time.monotonic() < deadline, "the burst did not finish"
        time.sleep(0.2)
    done = time.monotonic()
    while vacuums() == before:
        assert time.monotonic() - done < 5, "no vacuum after the burst"
        time.sleep(0.2)


def test_the_worker_process_plans_without_sequential_scans_but_tasks_do_not(start_worker) -> None:
    import os
    import threading

    from django.db import connection, connections
    from django.db.backends.signals import connection_created

    from tests import fault_tasks

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL planner setting")

    def setting() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT concat_ws(' ', current_setting('enable_seqscan'), "
                           "current_setting('plan_cache_mode'), current_setting('jit'))")
            return cursor.fetchone()[0]

    elsewhere: list[str] = []
    operations("default").steer_worker_planner([threading.current_thread().name])
    try:
        assert setting() == "off force_generic_plan off"  # this thread's new session
        thread = threading.Thread(target=lambda: (elsewhere.append(setting()),
                                                  connections.close_all()))
        thread.start()
        thread.join()
        assert elsewhere == ["on auto on"]  # another thread's session is left alone
    finally:
        connection_created.disconnect(dispatch_uid=f"djqueue.broker.postgresql.steer.{os.getpid()}")
        connection.close()
    start_worker("-c", "1")
    # tasks run in children
    assert fault_tasks.planner_setting.delay().get(timeout=15) == "on auto on"


def test_ids_and_names_are_in_byte_order_on_postgresql() -> None:
    """Migration 0003: the indexed task id and name columns compare bytes, not locale text
    (cheaper for every insert), and a revoked id still matches its message in the claim."""
    from django.db import connection

    from djqueue.client.revocation import revoke

    if connection.vendor != "postgresql":
        pytest.skip("column collations are PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE column_name IN ('task_id', 'task_name') "
            "AND table_name IN ('djqueue_message', 'djqueue_taskresult', 'djqueue_revocation')")
        collations = {(table, column): name for table, column, name in cursor.fetchall()}
    assert collations == {
        ("djqueue_message", "task_id"): "C", ("djqueue_message", "task_name"): "C",
        ("djqueue_taskresult", "task_id"): "C", ("djqueue_taskresult", "task_name"): "C",
        ("djqueue_revocation", "task_id"): "C",
    }
    kept, revoked = add.delay(1, 1), add.delay(2, 2)
    revoke([revoked.id])
    taken = operations("default").claim(["celery"], 10, "w", None, 60)
    assert {(m.task_id, m.revoked) for m in taken} == {(kept.id, False), (revoked.id, True)}


def test_mysql_claims_run_in_read_committed_whatever_the_projects_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Django opens MySQL sessions in READ COMMITTED unless OPTIONS say otherwise; with another
    level djqueue asks for READ COMMITTED before each transaction of its own (the next one
    only), and leaves the caller's transactions alone."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "mysql":
        pytest.skip("MySQL's isolation levels")
    broker = operations("default")
    add.delay(1, 1)
    connection.ensure_connection()
    with CaptureQueriesContext(connection) as default:
        assert len(broker.claim(["celery"], 1, "test@host", None, 60)) == 1
    assert not [q for q in default if "ISOLATION" in q["sql"]]
    add.delay(2, 2)
    monkeypatch.setattr(connection, "isolation_level", "repeatable read")
    with CaptureQueriesContext(connection) as chosen:
        assert len(broker.claim(["celery"], 1, "test@host", None, 60)) == 1
    sql = [q["sql"] for q in chosen if q["sql"] != "BEGIN"]
    asked = sql.index("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    assert "FOR UPDATE SKIP LOCKED" in sql[asked + 1]  # the claim's transaction follows
    with CaptureQueriesContext(connection) as inside, transaction.atomic():
        broker.claim(["celery"], 1, "test@host", None, 60)
    assert not [q for q in inside if "ISOLATION" in q["sql"]]
