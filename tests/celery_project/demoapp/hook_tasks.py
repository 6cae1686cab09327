"""A task class with handlers and a task with a custom state, written as Celery's documentation
writes them ("Handlers", "Custom states"); only the import lines differ. Each handler appends a
line to ``DJQUEUE_RECORD_FILE``, so a test reads which ran, in which process and order."""

import os

from djqueue import shared_task
from proj.celery import app


def write(line):
    with open(os.environ["DJQUEUE_RECORD_FILE"], "a") as file:
        file.write(f"{line} {os.getpid()}\n")


class AuditedTask(app.Task):
    def before_start(self, task_id, args, kwargs):
        write(f"before_start:{task_id}")

    def on_success(self, retval, task_id, args, kwargs):
        write(f"on_success:{task_id}:{retval}")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        write(f"on_failure:{task_id}:{type(exc).__name__}")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        write(f"after_return:{task_id}:{status}")


@shared_task(base=AuditedTask, bind=True)
def divide(self, x, y):
    self.update_state(state="PROGRESS", meta={"x": x, "y": y})
    return x / y
