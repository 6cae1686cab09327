"""Real ``manage.py celery worker`` processes, driven through the public API only."""

from __future__ import annotations

import signal
import time

import pytest
from django.db import transaction

from djqueue import states
from djqueue.models import Message
from example_project.demo.tasks import DemoError, fail, record, sleep
from tasks import add

from .conftest import wait_until


@pytest.mark.django_line  # manage.py start-up, the pool's children with their own connections
def test_walk_through(start_worker) -> None:
    worker = start_worker("-c", "2")
    log = worker.log()
    for expected in ("celery@", "concurrency: 2 (prefork)", ".> celery", "results:     database",
                     "[tasks]", "  . tasks.add", "  . example_project.demo.tasks.fail"):
        assert expected in log
    result = add.delay(4, 4)
    assert result.get(timeout=10) == 8
    log = worker.wait_for(f"Task tasks.add[{result.id}] succeeded in ")
    assert f"Received task: tasks.add[{result.id}]" in log
    assert f"Task tasks.add[{result.id}] succeeded in " in log and "s: 8" in log


def test_failure_is_logged_with_traceback_and_re_raised(start_worker) -> None:
    worker = start_worker("-c", "1")
    result = fail.delay("kaput")
    with pytest.raises(DemoError, match="kaput"):
        result.get(timeout=10)
    assert "raise DemoError(message)" in result.traceback
    log = worker.wait_for(f"Task example_project.demo.tasks.fail[{result.id}] raised unexpected")
    assert "DemoError('kaput')" in log and "Traceback (most recent call last)" in log


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_other_pools(start_worker, pool: str) -> None:
    start_worker("-P", pool, "-c", "2")
    results = [add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(10)]


def test_queue_selection(start_worker, record_file) -> None:
    elsewhere = record.apply_async(("elsewhere",), queue="low-priority")
    default = record.apply_async(("default",))
    start_worker("-c", "1")
    assert default.get(timeout=10) == "default"
    time.sleep(0.3)
    assert elsewhere.state == states.PENDING
    start_worker("-c", "1", "-Q", "low-priority,other")
    assert elsewhere.get(timeout=10) == "elsewhere"


def test_transactional_enqueue(start_worker, record_file) -> None:
    start_worker("-c", "1")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            record.delay("rolled-back")
            raise RuntimeError
    with transaction.atomic():
        committed = record.delay("committed")
        time.sleep(0.3)  # the worker polls meanwhile and must not see it yet
        assert committed.state == states.PENDING
    assert committed.get(timeout=10) == "committed"
    time.sleep(0.3)
    assert record_file.read_text().split()[::2] == ["committed"]


def test_countdown_runs_later(start_worker) -> None:
    start_worker("-c", "1")
    enqueued = time.monotonic()
    result = add.apply_async((1, 2), countdown=1)
    assert result.get(timeout=10) == 3
    assert time.monotonic() - enqueued >= 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_warm_shutdown_finishes_running_and_returns_reserved(start_worker, sig: int) -> None:
    worker = start_worker("-c", "1")
    running = sleep.delay(1.5, "finished")
    worker.wait_for(f"Received task: example_project.demo.tasks.sleep[{running.id}]")
    waiting = [add.delay(i, i) for i in range(3)]
    wait_until(lambda: Message.objects.filter(state="reserved").exists(), what="a reservation")
    time.sleep(0.2)
    worker.send(sig)
    assert worker.wait(timeout=15) == 0
    log = worker.log()
    assert "Warm shutdown" in log
    assert running.get(timeout=1) == "finished"
    # Nothing claimed is lost: every waiting message is back in the queue, ready for a worker.
    assert set(Message.objects.values_list("task_id", flat=True)) == {r.id for r in waiting}
    assert set(Message.objects.values_list("state", flat=True)) == {"ready"}
    start_worker("-c", "1")
    assert [r.get(timeout=10) for r in waiting] == [0, 2, 4]


def test_ctrl_c_in_a_terminal_reaches_the_whole_group(start_worker) -> None:
    """A terminal's Ctrl-C signals every process of the group: children must keep running."""
    import os

    worker = start_worker("-c", "2")
    running = sleep.delay(1.0, "survived")
    worker.wait_for(f"Received task: example_project.demo.tasks.sleep[{running.id}]")
    time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGINT)
    assert worker.wait(timeout=15) == 0
    assert running.get(timeout=1) == "survived"


def test_priority_expiry_and_eta_with_a_real_worker(start_worker, record_file) -> None:
    """Queued before the worker starts: highest priority first, expired never, eta on time."""
    from django.utils import timezone
    import datetime

    low = record.apply_async(("low",), priority=1)
    expired = record.apply_async(("expired",), expires=timezone.now() - datetime.timedelta(seconds=1))
    high = record.apply_async(("high",), priority=7)
    later = record.apply_async(("later",), eta=timezone.now() + datetime.timedelta(seconds=1))
    start_worker("-c", "1", "--prefetch-multiplier", "1")
    assert later.get(timeout=10) == "later"
    assert low.successful() and high.successful()
    assert expired.state == states.REVOKED
    assert record_file.read_text().split()[::2] == ["high", "low", "later"]


def test_logfile_option(start_worker, tmp_path) -> None:
    logfile = tmp_path / "worker.log"
    worker = start_worker("-c", "1", "--logfile", str(logfile), ready=False)
    wait_until(lambda: logfile.exists() and " ready." in logfile.read_text(), what="log file")
    result = add.delay(2, 3)
    assert result.get(timeout=10) == 5
    wait_until(lambda: f"Task tasks.add[{result.id}] succeeded" in logfile.read_text())
    assert "Task tasks.add" not in worker.log()  # the log went to the file, not stderr


@pytest.mark.django_line  # Django's system checks run by the worker
def test_worker_refuses_bad_settings_and_skips_web_checks(start_worker) -> None:
    """The worker runs djqueue's settings checks (and the models'), not a web server's: a bad
    djqueue setting stops it with the check's message; a URL configuration that cannot be
    imported does not, because the worker never imports it."""
    bad = start_worker("-c", "1", settings={"CELERY_TASK_SERIALIZER": "yaml"}, ready=False)
    assert bad.wait() != 0
    assert "djqueue.E003" in bad.log() and "SystemCheckError" in bad.log()
    worker = start_worker("-c", "1", settings={"ROOT_URLCONF": "tests.no_such_urlconf"})
    assert add.delay(2, 3).get(timeout=10) == 5
    assert "no_such_urlconf" not in worker.log()
