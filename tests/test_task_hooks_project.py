"""The task life cycle in the Celery-style project (tests/celery_project/): a task class derived
from ``app.Task`` of ``Celery("proj")``, used as ``@shared_task(base=...)``, its handlers run by
the project's worker. The details: tests/test_task_hooks.py, tests/test_task_hooks_process.py."""

from __future__ import annotations

import pytest

from djqueue import states

from .celery_project_support import project_worker  # noqa: F401 - a fixture

from demoapp.hook_tasks import divide  # noqa: E402 - the project is on sys.path now


def test_a_celery_style_task_class_runs_its_handlers(project_worker, record_file) -> None:  # noqa: F811
    project_worker("-c", "1", settings={"CELERY_IMPORTS": ["demoapp.hook_tasks"]})
    ok, failed = divide.delay(6, 3), divide.delay(1, 0)
    assert ok.get(timeout=30) == 2.0
    with pytest.raises(ZeroDivisionError):
        failed.get(timeout=30)
    assert failed.state == states.FAILURE
    lines = [line.split()[0] for line in record_file.read_text().splitlines()]
    assert lines == [
        f"before_start:{ok.id}", f"on_success:{ok.id}:2.0", f"after_return:{ok.id}:SUCCESS",
        f"before_start:{failed.id}", f"on_failure:{failed.id}:ZeroDivisionError",
        f"after_return:{failed.id}:FAILURE"]
    pids = {line.split()[1] for line in record_file.read_text().splitlines()}
    assert len(pids) == 1  # one pool child ran both calls and their handlers
