"""Tasks declared with Django's own ``@task`` (Django 6), run by djqueue through
``djqueue.contrib.django_tasks``. Imported by tests/test_django_tasks.py and, through
DJQUEUE_EXTRA_IMPORTS, by the workers it starts, both with its ``TASKS`` naming the backend
(Django's ``@task`` asks the backend to validate each task as it is declared)."""

from __future__ import annotations

import asyncio
import datetime
import os

from django.tasks import task
from django.tasks.signals import task_finished, task_started
from django.utils import timezone

from djqueue.exceptions import Retry
from example_project.demo.tasks import record

@task
def add(x, y):
    return x + y


@task(priority=50, queue_name="emails")
def send(to):
    record(f"sent-{to}")
    return to


@task(takes_context=True)
def with_context(context, key):
    return {"attempt": context.attempt, "id": context.task_result.id, "key": key,
            "pid": os.getpid()}


@task
async def async_double(x):
    await asyncio.sleep(0)
    return 2 * x


@task(takes_context=True)
def flaky(context):
    """Asks djqueue for another attempt, an hour on, in its first (the test moves it nearer);
    then returns the workers of its attempts as its context names them."""
    if context.attempt == 1:
        raise Retry(when=timezone.now() + datetime.timedelta(hours=1))
    return context.task_result.worker_ids


@task
def boom(message):
    raise ValueError(message)


def _recorded(signal_name):
    def receiver(sender, task_result, **kwargs):
        if os.environ.get("DJQUEUE_RECORD_FILE"):
            record(f"{signal_name}-{task_result.status}-{task_result.id}")
    return receiver


_on_start, _on_finish = _recorded("started"), _recorded("finished")
task_started.connect(_on_start)
task_finished.connect(_on_finish)
