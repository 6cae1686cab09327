"""Idle workers wake when a message is published (PostgreSQL) or falls due (both databases).

Every worker here polls only every 30 s, so a task that runs within a few seconds shows the
worker was woken, not that it happened to poll.
"""

from __future__ import annotations

import datetime
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from djqueue.models import TaskResult
from example_project.demo.tasks import record

from .conftest import wait_until

SLOW_POLLING = {"DJQUEUE_POLLING_INTERVAL": "30"}


def listening_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN %%'"
        )
        return cursor.fetchone()[0]


def test_publish_wakes_an_idle_worker_at_commit(start_worker, record_file) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    worker = start_worker("-c", "1", env=SLOW_POLLING)
    wait_until(lambda: listening_backends() == 1, timeout=10, what="the worker to LISTEN")
    time.sleep(0.3)  # past its first look at the (empty) queue
    first = record.delay("first")
    wait_until(first.ready, timeout=5, what="the task to run without waiting for a poll")
    with transaction.atomic():
        second = record.delay("second")
        time.sleep(0.5)
        assert not TaskResult.objects.filter(task_id=second.id).exists()  # not visible yet
    wait_until(second.ready, timeout=5, what="the task committed last to run")
    assert record_file.read_text().split()[::2] == ["first", "second"]
    assert "Traceback" not in worker.log()


def test_listening_connection_lost_and_regained(start_worker) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    worker = start_worker("-c", "1", env=SLOW_POLLING)
    wait_until(lambda: listening_backends() == 1, timeout=10, what="the worker to LISTEN")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
        )
    worker.wait_for("Lost the listening connection", timeout=5)
    wait_until(lambda: listening_backends() == 1, timeout=15, what="the worker to LISTEN again")
    time.sleep(0.3)
    woken = record.delay("again")
    wait_until(woken.ready, timeout=5, what="the task to run after reconnecting")


def test_idle_worker_sleeps_only_until_a_delayed_message_is_due(start_worker) -> None:
    due = timezone.now() + datetime.timedelta(seconds=2)
    delayed = record.apply_async(("later",), eta=due)
    start_worker("-c", "1", env=SLOW_POLLING)
    wait_until(delayed.ready, timeout=10, what="the delayed task to run when due")
    assert TaskResult.objects.get(task_id=delayed.id).date_done >= due


@pytest.mark.django_db(transaction=True)
def test_control_commands_are_announced_to_listeners() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    from djqueue.client.base import app
    from djqueue.broker.listen import Listener

    listener = Listener("default", ["celery"])
    listener.open()
    try:
        assert not listener.heard() and not listener.control_heard()
        with transaction.atomic():
            app.control.broadcast("ping")
            time.sleep(0.2)
            listener.heard()
            assert not listener.control_heard()  # not before the command commits
        deadline = time.monotonic() + 5
        while not listener.control_heard():
            assert time.monotonic() < deadline, "the control NOTIFY never arrived"
            assert not listener.heard()  # a control command is not a new message
            time.sleep(0.02)
    finally:
        listener.close()
