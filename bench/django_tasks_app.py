"""The tasks of bench/django_tasks.py: the same Django ``@task`` on each backend, and an
``async def`` djqueue task that naps."""

import asyncio

from django.tasks import task

from djqueue import task as djqueue_task


@task(queue_name="hold")
def noop_djqueue(i):
    return i


@task(backend="db", queue_name="hold")
def noop_db(i):
    return i


@djqueue_task(async_concurrency=250, queue="hold")
async def nap(seconds):
    await asyncio.sleep(seconds)
    return seconds


@djqueue_task(queue="hold")
def noop_celery_style(i):
    return i
