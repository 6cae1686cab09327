"""Fault injection: real workers, real signals, real crashes. Nothing enqueued may vanish.

Each test reports what it sent, how often tasks ran, and what was lost or duplicated; the table is
printed at the end of the run (see ``fault_report`` in conftest.py).
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from django.db import OperationalError, connection, transaction

from djqueue import states
from djqueue.client.base import app
from djqueue.exceptions import (
    EncodeError, SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded, WorkerLostError,
)
from djqueue.models import Message, TaskResult
from tests import fault_tasks as ft
from tasks import add

from .conftest import executions, wait_until

LOST_TIMEOUT = {"DJQUEUE_WORKER_LOST_TIMEOUT": "1.5"}


@pytest.mark.parametrize(("task", "exit_text"), [
    ("die", "exitcode 13"), ("killed", "signal 9 (SIGKILL)"),
])
def test_child_dies_mid_task_without_acks_late(
    start_worker, record_file, fault_report, task: str, exit_text: str
) -> None:
    worker = start_worker("-c", "1")
    result = getattr(ft, task).delay("die")
    with pytest.raises(WorkerLostError, match=re.escape(exit_text)):
        result.get(timeout=15)
    message = Message.objects.get(task_id=result.id)  # kept for inspection, never run again
    assert message.state == "rejected" and "WorkerLostError" in message.error
    after = add.delay(1, 1)
    assert after.get(timeout=15) == 2  # the child was replaced
    assert f"exited with {exit_text}" in worker.log()
    runs = executions(record_file)
    assert runs["die"] == 1
    how = "os._exit" if task == "die" else "SIGKILL, like the OOM killer"
    fault_report(f"pool child dies ({how}), no acks_late", sent=2, executed=runs["die"] + 1,
                 lost=0, duplicated=0, outcome="FAILURE WorkerLostError, message kept")


def test_child_dies_with_short_jobs_queued_behind(start_worker, record_file, fault_report) -> None:
    """Short tasks are sent to a child in batches; when the child dies, the job it ran fails with
    WorkerLostError and the jobs queued behind it, which never began, run once elsewhere."""
    worker = start_worker("-c", "2", "-l", "info")
    warm = [ft.quick.delay(f"warm-{i}") for i in range(10)]  # the worker learns it is short
    assert [r.get(timeout=15) for r in warm] == [f"warm-{i}" for i in range(10)]
    with transaction.atomic():  # one claim sees them all
        doomed = ft.quick.delay("doomed", die=True)
        behind = [ft.quick.delay(f"behind-{i}") for i in range(40)]
    with pytest.raises(WorkerLostError, match="exitcode 13"):
        doomed.get(timeout=15)
    assert [r.get(timeout=15) for r in behind] == [f"behind-{i}" for i in range(40)]
    runs = executions(record_file)
    assert runs["doomed"] == 1 and all(runs[f"behind-{i}"] == 1 for i in range(40)), runs
    log = worker.log()
    given_back = log.count("returned to the queue: its pool process stopped before it began")
    assert given_back >= 1, log  # some were queued behind the one that died
    fault_report("pool child dies with short jobs queued behind it", sent=41,
                 executed=41, lost=0, duplicated=0,
                 outcome=f"FAILURE WorkerLostError; {given_back} never begun, given back, ran once")


def test_no_batches_with_a_zero_window(start_worker, record_file) -> None:
    worker = start_worker("-c", "2", "-l", "info", settings={"DJQUEUE_POOL_BATCH_WINDOW": 0})
    assert [r.get(timeout=15) for r in [ft.quick.delay(f"w-{i}") for i in range(5)]]
    with transaction.atomic():
        doomed = ft.quick.delay("doomed", die=True)
        behind = [ft.quick.delay(f"behind-{i}") for i in range(10)]
    with pytest.raises(WorkerLostError):
        doomed.get(timeout=15)
    assert [r.get(timeout=15) for r in behind] == [f"behind-{i}" for i in range(10)]
    assert "stopped before it began" not in worker.log()  # one job at a time per child


def test_child_dies_mid_task_with_acks_late(start_worker, record_file, tmp_path, fault_report) -> None:
    start_worker("-c", "1")
    result = ft.die_once_late.delay("late", str(tmp_path / "marker"))
    assert result.get(timeout=15) == "second run"
    assert executions(record_file)["late"] == 2
    assert not Message.objects.exists()
    fault_report("pool child dies (os._exit), acks_late", sent=1, executed=2, lost=0,
                 duplicated=0, outcome="redelivered, SUCCESS on 2nd run (at-least-once)")


@pytest.mark.parametrize("late", [False, True])
def test_worker_killed_messages_recovered_by_another(
    start_worker, record_file, fault_report, late: bool
) -> None:
    first = start_worker("-c", "1", "-n", "doomed@%h", env=LOST_TIMEOUT)
    napper = (ft.nap_late if late else ft.nap).delay("running", 5)
    first.wait_for(f"[{napper.id}]")
    with transaction.atomic():  # one commit, so the worker reserves all three in one claim
        waiting = [ft.nap.delay(f"waiting-{i}", 0) for i in range(3)]
    wait_until(lambda: Message.objects.filter(state="reserved").count() == 3, what="reservations")
    first.kill()  # SIGKILL to the whole process group: no chance to clean up
    second = start_worker("-c", "2", "-n", "rescuer@%h", env=LOST_TIMEOUT)
    assert [r.get(timeout=20) for r in waiting] == [f"waiting-{i}" for i in range(3)]
    if late:
        assert napper.get(timeout=20) == "running"
    else:
        with pytest.raises(WorkerLostError, match="heartbeats"):
            napper.get(timeout=20)
        assert Message.objects.get(task_id=napper.id).state == "rejected"
        assert "lost: worker doomed@" in second.log()
    runs = executions(record_file)
    assert all(runs[f"waiting-{i}"] == 1 for i in range(3))
    assert runs["running"] == (2 if late else 1)
    fault_report(f"worker SIGKILLed, {'acks_late' if late else 'no acks_late'}", sent=4,
                 executed=sum(runs.values()), lost=0, duplicated=0,
                 outcome="reserved rerun once; started " + (
                     "rerun (at-least-once)" if late else "FAILURE WorkerLostError"))


@pytest.mark.parametrize("how", ["SIGQUIT", "second SIGINT"])
def test_cold_shutdown(start_worker, record_file, fault_report, how: str) -> None:
    worker = start_worker("-c", "2")
    plain = ft.nap.delay("plain", 30)
    late = ft.nap_late.delay("late", 30)
    worker.wait_for(f"[{plain.id}]")
    worker.wait_for(f"[{late.id}]")
    wait_until(lambda: Message.objects.filter(state="started").count() == 2, what="2 started")
    if how == "SIGQUIT":
        worker.send(signal.SIGQUIT)
    else:
        worker.send(signal.SIGINT)
        worker.wait_for("Warm shutdown")
        worker.send(signal.SIGINT)
    assert worker.wait(timeout=15) == 0
    assert "Cold shutdown" in worker.log()
    with pytest.raises(WorkerLostError, match="cold shutdown"):
        plain.get(timeout=1)
    assert Message.objects.get(task_id=late.id).state == "ready"  # acks_late: back in the queue
    assert Message.objects.get(task_id=plain.id).state == "rejected"
    fault_report(f"cold shutdown ({how})", sent=2, executed=2, lost=0, duplicated=0,
                 outcome="no acks_late: FAILURE WorkerLostError; acks_late: back to ready")


def test_time_limits(start_worker, record_file, fault_report) -> None:
    worker = start_worker("-c", "1", "--time-limit", "30")
    hard = ft.nap.apply_async(("hard", 10), time_limit=0.5)
    polite = ft.slow_but_polite.delay("soft")
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=15)
    assert polite.get(timeout=15) == "cleaned up"
    assert "Hard time limit (0.5s) exceeded" in worker.log()
    assert add.delay(2, 2).get(timeout=10) == 4  # the killed child was replaced
    fault_report("hard / soft time limit", sent=3, executed=3, lost=0, duplicated=0,
                 outcome="TimeLimitExceeded; SoftTimeLimitExceeded caught by the task")


def test_soft_time_limit_from_settings_reaches_the_task(start_worker, settings) -> None:
    start_worker("-c", "1", "--soft-time-limit", "0.3")
    result = ft.nap.delay("sleepy", 5)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=15)


def test_max_tasks_per_child_recycles(start_worker, record_file) -> None:
    start_worker("-c", "1", "--maxtasksperchild", "2")
    pids = [ft.pid.delay(f"p{i}").get(timeout=10) for i in range(4)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]


def test_retries(start_worker, record_file, fault_report) -> None:
    start_worker("-c", "2")
    recovers = ft.flaky.delay("flaky", 2)
    gives_up = ft.flaky.delay("hopeless", 5)
    auto = ft.always_flaky.delay("auto")
    assert recovers.get(timeout=15) == 2
    with pytest.raises(ft.Flaky, match="attempt 3"):
        gives_up.get(timeout=15)
    with pytest.raises(ft.Flaky, match="never works"):
        auto.get(timeout=15)
    runs = executions(record_file)
    assert (runs["flaky"], runs["hopeless"], runs["auto"]) == (3, 4, 3)
    fault_report("retries (retry, max_retries, autoretry_for)", sent=3, executed=10, lost=0,
                 duplicated=0, outcome="SUCCESS after 2 retries; FAILURE after max_retries")


def test_retry_is_a_new_available_at_time_not_a_sleeping_worker(start_worker) -> None:
    start_worker("-c", "1")
    result = ft.retry_in_a_minute.delay("later")
    wait_until(lambda: result.state == states.RETRY, what="RETRY")
    message = Message.objects.get(task_id=result.id)
    assert (message.state, message.retries, message.worker) == ("ready", 1, "")
    assert 50 < (message.available_at - message.created_at).total_seconds() < 70
    assert isinstance(result.result, ft.Flaky)


def test_revoke(start_worker, record_file, fault_report) -> None:
    early = ft.nap.delay("early", 0)
    early.revoke()  # before any worker exists: the revocation is a row
    worker = start_worker("-c", "1")
    with pytest.raises(TaskRevokedError):
        early.get(timeout=10)
    running = ft.nap.delay("running", 30)
    worker.wait_for(f"[{running.id}]")
    wait_until(lambda: Message.objects.filter(task_id=running.id, state="started").exists())
    app.AsyncResult(running.id).revoke(terminate=True, signal="SIGKILL")
    with pytest.raises(TaskRevokedError, match="terminated"):
        running.get(timeout=10)
    assert add.delay(3, 3).get(timeout=10) == 6
    runs = executions(record_file)
    assert runs["early"] == 0 and runs["running"] == 1
    fault_report("revoke waiting / terminate running", sent=3, executed=2, lost=0,
                 duplicated=0, outcome="REVOKED; never ran / stopped")


def test_bad_rows_do_not_stop_the_worker(start_worker, record_file, fault_report) -> None:
    worker = start_worker("-c", "1")
    good_before = add.delay(1, 1)
    assert good_before.get(timeout=10) == 2
    with transaction.atomic():  # the running worker must see the rows only once they are broken
        broken = [add.delay(i, i) for i in range(3)]
        Message.objects.filter(task_id=broken[0].id).update(body="[1, 2]")  # valid JSON, bad shape
        Message.objects.filter(task_id=broken[1].id).update(content_type="application/x-nonsense")
        Message.objects.filter(task_id=broken[2].id).update(body="garbage " * 20_000)
    unknown = app.send_task("tasks.not_deployed_yet", args=[1])
    after = add.delay(5, 5)
    assert after.get(timeout=10) == 10
    for result in [*broken, unknown]:
        wait_until(lambda: result.state == states.FAILURE, what=f"{result.id} FAILURE")
    assert set(Message.objects.values_list("state", flat=True)) == {"rejected"}
    assert Message.objects.count() == 4
    assert worker.proc.poll() is None
    fault_report("malformed rows / unknown task", sent=6, executed=2, lost=0, duplicated=0,
                 outcome="FAILURE DecodeError/NotRegistered, messages kept as rejected")


def _drain_through_outage(start_worker, record_file, interrupt) -> tuple[int, int]:
    start_worker("-c", "2")
    total = 300
    results = [ft.nap.delay(f"k{i}", 0.01) for i in range(total)]
    wait_until(lambda: len(record_file.read_text().splitlines()) >= 20, what="progress")
    interrupt()
    wait_until(lambda: TaskResult.objects.filter(state=states.SUCCESS).count() == total,
               timeout=90, what="all results")
    runs = executions(record_file)
    assert set(runs) == {f"k{i}" for i in range(total)}
    assert len(results) == total
    return total, sum(runs.values())


#: Per vendor: how to kill every other connection to the test database, and what that is called.
KILLS = {
    "postgresql": ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                   "WHERE datname = %s AND pid <> pg_backend_pid()", "pg_terminate_backend"),
    "mysql": ("SELECT id FROM information_schema.processlist WHERE db = %s "
              "AND id <> CONNECTION_ID()", "KILL CONNECTION"),
}


@pytest.mark.django_line  # Django's connections after an error
def test_database_connections_killed(start_worker, record_file, fault_report) -> None:
    if connection.vendor not in KILLS:
        pytest.skip("no connections to kill on SQLite; its lock outage is tested instead")
    name = connection.settings_dict["NAME"]
    sql, how = KILLS[connection.vendor]

    def kill_connections() -> None:
        for _ in range(3):
            with connection.cursor() as cursor:
                cursor.execute(sql, [name])
                if connection.vendor == "mysql":  # KILL takes one id, as a statement
                    for (process_id,) in cursor.fetchall():
                        try:
                            cursor.execute(f"KILL CONNECTION {int(process_id)}")
                        except OperationalError:
                            pass  # gone meanwhile
            time.sleep(0.3)

    sent, executed = _drain_through_outage(start_worker, record_file, kill_connections)
    assert executed == sent
    fault_report(f"database connections killed ({how} x3)", sent=sent,
                 executed=executed, lost=0, duplicated=executed - sent, outcome="all SUCCESS")


@pytest.mark.django_line  # Django's SQLite backend waiting on a lock
def test_database_locked_for_seconds(start_worker, record_file, fault_report) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("an exclusive file lock is SQLite's outage")
    import sqlite3

    def hold_lock() -> None:
        blocker = sqlite3.connect(connection.settings_dict["NAME"], timeout=30)
        blocker.execute("BEGIN EXCLUSIVE")
        time.sleep(3)
        blocker.rollback()
        blocker.close()

    sent, executed = _drain_through_outage(start_worker, record_file, hold_lock)
    assert executed == sent
    fault_report("database locked 3 s (SQLite BEGIN EXCLUSIVE)", sent=sent, executed=executed,
                 lost=0, duplicated=executed - sent, outcome="all SUCCESS")


def test_a_nul_character_in_a_traceback_is_stored(start_worker, record_file, fault_report) -> None:
    """The traceback keeps U+FFFD in the NUL's place (PostgreSQL's text cannot hold it, SQLite
    cut the text there) and the exception, stored encoded, comes back whole. On PostgreSQL the
    worker used to die on the round."""
    worker = start_worker("-c", "1")
    failed = ft.nul_in_error.delay("n1")
    after = add.delay(2, 2)
    assert after.get(timeout=10) == 4
    wait_until(lambda: failed.state == states.FAILURE, what="FAILURE stored")
    with pytest.raises(ValueError) as raised:
        failed.get(timeout=1)
    assert str(raised.value) == "bad byte \x00 in n1"
    assert "ValueError: bad byte \ufffd in n1" in failed.traceback
    assert not Message.objects.exists()
    assert executions(record_file) == {"n1": 1}
    assert worker.proc.poll() is None
    fault_report("NUL character in an exception", sent=2, executed=2, lost=0, duplicated=0,
                 outcome="FAILURE stored with its traceback")


@pytest.mark.parametrize(("task_name", "error", "match", "fault"), [
    ("unprintable_error", ValueError, "unrepresentable Unprintable object",
     "repr() raises in an exception argument"),
    ("unprintable_result", EncodeError, "not JSON serializable",
     "repr() raises in a return value"),
    ("unreadable_error", EncodeError, "Could not record the outcome.*no args",
     "an exception's args raise"),
    ("deep_error", ValueError, "unrepresentable list object",
     "exception argument too deep for JSON"),
])
def test_an_outcome_hard_to_record_fails_its_task_only(
    start_worker, record_file, fault_report, task_name, error, match, fault
) -> None:
    """A value whose ``repr()`` raises, an exception whose ``args`` raise, a nesting too deep
    for JSON: each used to kill the pool process after the task had run (the message was then
    set aside as WorkerLostError). Now that task fails, and the pool process stays."""
    worker = start_worker("-c", "1")
    bad = getattr(ft, task_name).delay("k1")
    after = add.delay(3, 3)
    assert after.get(timeout=10) == 6
    wait_until(bad.ready, what=f"{task_name} settled")
    with pytest.raises(error, match=match):
        bad.get(timeout=1)
    assert not Message.objects.exists()
    assert executions(record_file) == {"k1": 1}
    assert "Process 'ForkPoolWorker" not in worker.log()
    assert worker.proc.poll() is None
    fault_report(fault, sent=2, executed=2, lost=0, duplicated=0,
                 outcome=f"FAILURE {error.__name__}, pool process kept")
