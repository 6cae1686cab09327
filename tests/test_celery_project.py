"""A project written for Celery, run on djqueue: tests/celery_project/ (see
tests/celery_project_support.py), against real workers."""

from __future__ import annotations

import pytest

from djqueue import states

from .celery_project_support import project_worker  # noqa: F401 - a fixture
from .conftest import executions

from demoapp.tasks import add, fail, record  # noqa: E402 - the project is on sys.path now


def test_the_project_runs_its_tasks(project_worker, record_file) -> None:  # noqa: F811
    worker = project_worker("-c", "2")
    log = worker.log()
    assert "demoapp.tasks.add" in log and "proj.celery.debug_task" in log
    assert add.delay(2, 3).get(timeout=20) == 5
    assert record.delay("once").get(timeout=20) == "once"
    failed = fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=20)
    assert failed.state == states.FAILURE
    assert executions(record_file) == {"once": 1}
