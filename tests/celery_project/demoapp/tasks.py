"""Tasks of the Celery-style test project, written as Celery's documentation writes them
(``from celery import shared_task`` becomes ``from djqueue import shared_task``).

Tests call them from the test process (tests/celery_project_support.py puts this project on
``sys.path``), and the project's workers run them. A task that records its runs appends a line to
the file named by ``DJQUEUE_RECORD_FILE`` (one line per execution), so a test counts executions
from what the task wrote.
"""

import os
import time

from djqueue import shared_task


@shared_task
def add(x, y):
    return x + y


@shared_task
def mul(x, y):
    return x * y


@shared_task
def xsum(numbers):
    return sum(numbers)


@shared_task
def record(key):
    """Append ``key`` to the record file; returns ``key``."""
    with open(os.environ["DJQUEUE_RECORD_FILE"], "a") as file:
        file.write(f"{key} {os.getpid()}\n")
    return key


@shared_task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@shared_task
def fail(message):
    raise ValueError(message)
