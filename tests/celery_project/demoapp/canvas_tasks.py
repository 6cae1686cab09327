"""Canvas of the Celery-style test project, written as Celery's guide "Canvas: Designing
Work-flows" and its API reference write it (``from celery import group, shared_task`` becomes
``from djqueue import group, shared_task``). The worker imports this module through
``CELERY_IMPORTS`` (tests/test_canvas_project.py).

An error callback appends a line to the file named by ``DJQUEUE_RECORD_FILE``, so a test counts
its calls from what it wrote.
"""

import os

from djqueue import group, shared_task

from demoapp.tasks import add


@shared_task
def tsum(numbers):
    return sum(numbers)


@shared_task
def error_handler(request, exc, traceback):
    """A ``link_error`` callback with Celery's new-style signature."""
    print(f"Task {request.id} raised exception: {exc!r}\n{traceback!r}")
    with open(os.environ["DJQUEUE_RECORD_FILE"], "a") as file:
        file.write(f"error:{request.id}:{type(exc).__name__} {os.getpid()}\n")


@shared_task(bind=True)
def fan_out(self, n):
    """Replaced by a group: what follows it receives the group's results."""
    return self.replace(group(add.s(i, i) for i in range(n)))


# ``AsyncResult.collect()``'s example in Celery's API reference (A, B, pow2). There ``A``
# returns the group's result, which Celery stores as its tuple form; djqueue stores only values
# its serializer takes, so ``A`` returns how many it started.


@shared_task(trail=True)
def A(how_many):  # noqa: N802 - Celery's example
    group(B.s(i) for i in range(how_many))()
    return how_many


@shared_task(trail=True)
def B(i):  # noqa: N802 - Celery's example
    return pow2.delay(i).id


@shared_task(trail=True)
def pow2(i):
    return i ** 2
