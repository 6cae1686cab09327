"""Django's ``django.tasks`` through ``djqueue.contrib.django_tasks`` (README, "Django's tasks
framework"): one test per behaviour Django documents for a backend, in-process and against a
real worker. Django 6 only, but for the message Django 5.2 gives."""

from __future__ import annotations

import datetime
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator

import django
import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

from djqueue.client.base import app
from djqueue.models import Message
from djqueue.worker.loop import Worker
from tasks import add as celery_add

from .conftest import executions, wait_until

DJANGO_6 = django.VERSION >= (6, 0)
needs_django_6 = pytest.mark.skipif(not DJANGO_6, reason="django.tasks is new in Django 6; "
                                    "scripts/test runs these on the Django 6 line")

if DJANGO_6:
    from django.tasks import TaskResultStatus, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.checks import check_tasks  # what manage.py check runs for TASKS
    from django.tasks.signals import task_enqueued, task_finished, task_started

    from djqueue.contrib.django_tasks import DjqueueBackend, djqueue_priority, listened


@pytest.mark.skipif(DJANGO_6, reason="the message of the Django 5.2 line")
def test_backend_module_says_it_needs_django_6() -> None:
    sys.modules.pop("djqueue.contrib.django_tasks", None)
    with pytest.raises(ImportError, match=r"needs|Django 6\.0 added.*Upgrade Django"):
        importlib.import_module("djqueue.contrib.django_tasks")


TASKS = {
    "default": {
        "BACKEND": "djqueue.contrib.django_tasks.DjqueueBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"queues": {"emails": "mail"}},
    }
}


@pytest.fixture
def defs(settings) -> Iterator[object]:
    """The task module, with TASKS naming djqueue's backend (as the worker's settings do)."""
    if not DJANGO_6:
        pytest.skip(needs_django_6.kwargs["reason"])
    settings.TASKS = TASKS
    yield importlib.import_module("tests.django_task_defs")


@pytest.fixture
def worker() -> Worker:
    w = Worker(app, pool="solo", poll_interval=0, hostname="test@%h", queues=["celery", "mail"])
    w.start()
    return w


def drain(worker: Worker, rounds: int = 5) -> None:
    for _ in range(rounds):
        worker.loop()


def caught(signal) -> list:
    seen: list = []

    def receiver(sender, task_result, **kwargs):
        seen.append((sender, task_result.status, task_result.id))

    signal.connect(receiver, weak=False)
    seen.append(receiver)  # first item: what to disconnect
    return seen


def test_backend_has_every_capability_and_tasks_register_with_djqueue(defs) -> None:
    backend = task_backends["default"]
    assert isinstance(backend, DjqueueBackend)
    assert (backend.supports_defer, backend.supports_async_task, backend.supports_get_result,
            backend.supports_priority) == (True, True, True, True)
    for name in ("add", "send", "with_context", "async_double", "boom"):
        assert f"tests.django_task_defs.{name}" in app.tasks


@needs_django_6
def test_priority_range_maps_onto_djqueues_in_order() -> None:
    assert [djqueue_priority(p) for p in (-100, -1, 0, 1, 50, 100)] == [0, 126, 128, 129, 191, 255]


@pytest.mark.django_db(transaction=True)
def test_enqueue_is_part_of_the_callers_transaction_and_sends_task_enqueued(defs) -> None:
    seen = caught(task_enqueued)
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            defs.add.enqueue(1, 2)
            raise RuntimeError
        assert not Message.objects.exists()
        before = timezone.now()
        result = defs.add.enqueue(1, 2)
    finally:
        task_enqueued.disconnect(seen.pop(0))
    row = Message.objects.get(task_id=result.id)
    assert (row.task_name, row.queue, row.priority) == ("tests.django_task_defs.add", "celery", 128)
    assert result.status == TaskResultStatus.READY and result.args == [1, 2]
    assert before - datetime.timedelta(seconds=1) <= result.enqueued_at <= timezone.now()
    assert seen == [(DjqueueBackend, TaskResultStatus.READY, result.id)]


@pytest.mark.django_db(transaction=True)
def test_priority_queue_name_and_run_after_reach_the_message(defs) -> None:
    later = timezone.now() + datetime.timedelta(hours=1)
    urgent = defs.send.using(priority=100, run_after=later).enqueue("x@example.com")
    low = defs.send.using(priority=-100).enqueue("y@example.com")
    rows = {m.task_id: m for m in Message.objects.all()}
    assert (rows[urgent.id].queue, rows[urgent.id].priority) == ("mail", 255)
    assert rows[urgent.id].available_at == later
    assert rows[low.id].priority == 0 and rows[low.id].available_at <= timezone.now()
    with pytest.raises(InvalidTask, match="Queue 'other' is not valid"):
        defs.send.using(queue_name="other")
    with pytest.raises(InvalidTask, match="priority"):
        defs.send.using(priority=101)
    with pytest.raises(InvalidTask, match="aware"):
        defs.send.using(run_after=datetime.datetime(2030, 1, 1))


@pytest.mark.django_db(transaction=True)
def test_get_result_of_a_waiting_task_and_of_ids_it_does_not_know(defs) -> None:
    result = defs.add.enqueue(2, y=3)
    found = defs.add.get_result(result.id)
    assert (found.status, found.args, found.kwargs, found.enqueued_at) == (
        TaskResultStatus.READY, [2], {"y": 3}, result.enqueued_at)
    assert (found.started_at, found.finished_at, found.worker_ids, found.attempts) == (
        None, None, [], 0)
    with pytest.raises(ValueError, match="not finished"):
        found.return_value
    with pytest.raises(TaskResultMismatch):
        defs.send.get_result(result.id)
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result("no-such-id")
    celery_style = celery_add.delay(1, 1)
    with pytest.raises(TaskResultDoesNotExist):  # djqueue's own tasks are not Django's
        task_backends["default"].get_result(celery_style.id)


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_them_and_results_read_back_with_signals(defs, worker) -> None:
    started, finished = caught(task_started), caught(task_finished)
    try:
        ok = defs.add.enqueue(20, 22)
        failed = defs.boom.enqueue("kaput")
        context = defs.with_context.enqueue("k")
        drain(worker)
    finally:
        task_started.disconnect(started.pop(0))
        task_finished.disconnect(finished.pop(0))
    ok.refresh()
    assert (ok.status, ok.return_value, ok.attempts) == (TaskResultStatus.SUCCESSFUL, 42, 1)
    assert ok.worker_ids == [worker.hostname]
    assert ok.enqueued_at <= ok.started_at <= ok.finished_at
    assert ok.last_attempted_at == ok.started_at
    assert ok.args == [20, 22] and ok.errors == []
    bad = defs.boom.get_result(failed.id)
    assert bad.status == TaskResultStatus.FAILED
    assert bad.errors[0].exception_class_path == "builtins.ValueError"
    assert bad.errors[0].exception_class is ValueError
    assert "raise ValueError(message)" in bad.errors[0].traceback
    with pytest.raises(ValueError, match="failed"):
        bad.return_value
    value = defs.with_context.get_result(context.id).return_value
    assert (value["attempt"], value["id"], value["key"]) == (1, context.id, "k")
    assert started == [(DjqueueBackend, TaskResultStatus.RUNNING, r.id)
                       for r in (ok, failed, context)]
    assert finished == [(DjqueueBackend, TaskResultStatus.SUCCESSFUL, ok.id),
                        (DjqueueBackend, TaskResultStatus.FAILED, failed.id),
                        (DjqueueBackend, TaskResultStatus.SUCCESSFUL, context.id)]


@pytest.mark.django_db(transaction=True)
def test_async_tasks_and_aenqueue_aget_result_arefresh_from_async_code(defs, worker) -> None:
    result = async_to_sync(defs.async_double.aenqueue)(21)
    assert async_to_sync(defs.async_double.aget_result)(result.id).status == TaskResultStatus.READY
    drain(worker)
    async_to_sync(result.arefresh)()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 42)


@pytest.mark.django_db(transaction=True)
def test_a_running_task_reads_back_as_running(defs, worker) -> None:
    result = defs.add.enqueue(1, 1)
    Message.objects.filter(task_id=result.id).update(
        state="started", worker="elsewhere@host", started_at=timezone.now())
    running = defs.add.get_result(result.id)
    assert (running.status, running.worker_ids, running.attempts) == (
        TaskResultStatus.RUNNING, ["elsewhere@host"], 1)
    assert running.started_at == running.last_attempted_at is not None
    # A third attempt: its message names the workers of the first two.
    Message.objects.filter(task_id=result.id).update(retries=2, body=json.dumps(
        {"args": [1, 1], "kwargs": {}, "headers": {"workers": ["a@host", "b@host"]}}))
    third = defs.add.get_result(result.id)
    assert (third.worker_ids, third.attempts, third.args) == (
        ["a@host", "b@host", "elsewhere@host"], 3, [1, 1])


@pytest.mark.django_db(transaction=True)
def test_a_retried_task_names_the_worker_of_each_attempt(defs, worker) -> None:
    other = Worker(app, pool="solo", poll_interval=0, hostname="other@%h", queues=["celery"])
    other.start()
    started, finished = caught(task_started), caught(task_finished)
    try:
        result = defs.flaky.enqueue()
        drain(worker)  # the first attempt asks for another, an hour on
        waiting = defs.flaky.get_result(result.id)
        assert (waiting.status, waiting.worker_ids, waiting.attempts) == (
            TaskResultStatus.READY, [worker.hostname], 1)
        Message.objects.filter(task_id=result.id).update(available_at=timezone.now())
        drain(other)
    finally:
        task_started.disconnect(started.pop(0))
        task_finished.disconnect(finished.pop(0))
    result.refresh()
    assert (result.status, result.attempts) == (TaskResultStatus.SUCCESSFUL, 2)
    assert result.worker_ids == result.return_value == [worker.hostname, other.hostname]
    assert started == [(DjqueueBackend, TaskResultStatus.RUNNING, result.id)] * 2
    assert finished == [(DjqueueBackend, TaskResultStatus.SUCCESSFUL, result.id)]  # once


@pytest.mark.django_db(transaction=True)
def test_djangos_log_receivers_alone_are_not_sent_to_unless_its_logger_is_configured(
        defs, worker, caplog) -> None:
    for signal_, receiver in ((task_started, defs._on_start), (task_finished, defs._on_finish)):
        signal_.disconnect(receiver)  # the test module's own: only Django's are left
    try:
        assert not listened(task_started, DjqueueBackend)
        assert not listened(task_finished, DjqueueBackend)
        caplog.set_level(logging.INFO)
        quiet = defs.add.enqueue(1, 1)
        drain(worker)
        assert quiet.refresh() is None and quiet.return_value == 2
        assert not [r for r in caplog.records if r.name == "django.tasks"]
        caplog.set_level(logging.INFO, logger="django.tasks")  # as LOGGING configuring it does
        assert listened(task_started, DjqueueBackend) and listened(task_finished, DjqueueBackend)
        logged = defs.add.enqueue(2, 2)
        drain(worker)
    finally:
        task_started.connect(defs._on_start)
        task_finished.connect(defs._on_finish)
    assert [r.getMessage() for r in caplog.records if r.name == "django.tasks"] == [
        f"Task id={logged.id} path=tests.django_task_defs.add state={state}"
        for state in ("RUNNING", "SUCCESSFUL")]


@needs_django_6
def test_check_validates_the_backend_options(settings) -> None:
    settings.TASKS = {"default": {
        "BACKEND": "djqueue.contrib.django_tasks.DjqueueBackend",
        "QUEUES": ["default", "x" * 300],
        "OPTIONS": {"queues": ["not", "a", "dict"], "time_limit": -1, "colour": "blue",
                    "async_concurrency": 10},
    }}
    found = [m for m in check_tasks() if m.id.startswith("djqueue.E17")]
    text = "\n".join(m.msg for m in found)
    assert [m.id for m in found].count("djqueue.E170") == 3 and "djqueue.E171" in {m.id for m in found}
    assert "'queues'" in text and "'time_limit'" in text and "'colour'" in text
    assert "async_concurrency" not in text
    settings.TASKS = {"default": {"BACKEND": "djqueue.contrib.django_tasks.DjqueueBackend",
                                  "OPTIONS": {"acks_late": True, "soft_time_limit": 5}}}
    assert not [m for m in check_tasks() if m.id.startswith("djqueue.")]


def test_django_tasks_run_in_a_real_worker_beside_celery_tasks(defs, start_worker,
                                                               record_file) -> None:
    start_worker("-c", "2", "-Q", "celery,mail", settings={"TASKS": TASKS}, env={
        "DJQUEUE_EXTRA_IMPORTS": "tests.fault_tasks,tests.django_task_defs"})
    celery_style = celery_add.delay(2, 2)
    results = [defs.add.enqueue(1, 2), defs.send.enqueue("z@example.com"),
               defs.async_double.enqueue(4), defs.with_context.enqueue("c"),
               defs.boom.enqueue("no")]
    assert celery_style.get(timeout=20) == 4
    for result in results:
        wait_until(lambda: _finished(result), what=f"{result.task.name}[{result.id}]")
    add_, send, double, context, boom = results
    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 4 + [
        TaskResultStatus.FAILED]
    assert (add_.return_value, send.return_value, double.return_value) == (3, "z@example.com", 8)
    assert context.return_value["attempt"] == 1 and context.return_value["pid"] != os.getpid()
    assert "ValueError: no" in boom.errors[0].traceback
    assert executions(record_file)["sent-z@example.com"] == 1
    entries = [line.split() for line in record_file.read_text().splitlines()]
    for result in results:  # sent in the worker's pool process, not here
        ok = "FAILED" if result is boom else "SUCCESSFUL"
        for key in (f"started-RUNNING-{result.id}", f"finished-{ok}-{result.id}"):
            pids = [int(pid) for name, pid in entries if name == key]
            assert len(pids) == 1 and pids[0] != os.getpid(), key


def test_a_retry_from_one_worker_process_runs_in_another_and_both_are_named(
        defs, start_worker) -> None:
    env = {"DJQUEUE_EXTRA_IMPORTS": "tests.fault_tasks,tests.django_task_defs"}
    first = start_worker("-n", "first@test", settings={"TASKS": TASKS}, env=env)
    result = defs.flaky.enqueue()
    wait_until(lambda: Message.objects.filter(task_id=result.id, retries=1).exists(),
               what="the first attempt's retry")
    first.send(signal.SIGTERM)
    first.wait()
    Message.objects.filter(task_id=result.id).update(available_at=timezone.now())
    start_worker("-n", "second@test", settings={"TASKS": TASKS}, env=env)
    wait_until(lambda: _finished(result), what=f"flaky[{result.id}]")
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.worker_ids == result.return_value == ["first@test", "second@test"]
    assert result.attempts == 2


def _finished(result) -> bool:
    result.refresh()
    return result.is_finished
