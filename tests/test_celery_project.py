"""A project written for Celery, run on djqueue: tests/celery_project/ (see
tests/celery_project_support.py), against real workers."""

from __future__ import annotations

import pytest
from django.test import override_settings

from djqueue import states
from djqueue.client.base import app as djqueue_app
from djqueue.models import TaskResult
from djqueue.result import GroupResult

from .celery_project_support import project_worker  # noqa: F401 - a fixture
from .conftest import executions
from .test_backends import MEMCACHED_URL, REDIS_RESULTS_URL, memcached_available, redis_available  # noqa: F401

from demoapp.tasks import add, fail, record  # noqa: E402 - the project is on sys.path now


@pytest.mark.django_line  # Django imports proj/ (and its app) while it reads the settings
def test_the_project_runs_its_tasks(project_worker, record_file) -> None:  # noqa: F811
    # Concurrency from a Celery >= 4 name: the project's settings use only those.
    worker = project_worker("-n", "proj@test", settings={"CELERY_WORKER_CONCURRENCY": 2})
    log = worker.log()
    assert "demoapp.tasks.add" in log and "proj.celery.debug_task" in log
    assert ".> app:         proj\n" in log  # Celery("proj") names the app
    assert "No task is registered" not in log
    assert add.delay(2, 3).get(timeout=20) == 5
    assert record.delay("once").get(timeout=20) == "once"
    failed = fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=20)
    assert failed.state == states.FAILURE
    assert executions(record_file) == {"once": 1}
    inspect = djqueue_app.control.inspect(timeout=5)
    assert inspect.stats()["proj@test"]["pool"]["max-concurrency"] == 2
    assert inspect.conf()["proj@test"]["CELERY_TRACK_STARTED"] is True  # CELERY_TASK_TRACK_STARTED
    with pytest.raises(TypeError, match="missing a required argument"):
        add.delay(5)  # checked here, before sending


def test_mixed_setting_names_stop_the_worker_with_a_hint(project_worker) -> None:  # noqa: F811
    worker = project_worker(settings={"CELERYD_PREFETCH_MULTIPLIER": 2}, ready=False)
    assert worker.wait(timeout=60) != 0
    log = worker.log()
    assert "djqueue.E001" in log and "CELERYD_PREFETCH_MULTIPLIER" in log
    assert "CELERYD_PREFETCH_MULTIPLIER -> CELERY_WORKER_PREFETCH_MULTIPLIER" in log


@pytest.mark.vendor_neutral  # the subject is where results go, not the broker's SQL
@pytest.mark.parametrize("backend", [REDIS_RESULTS_URL, MEMCACHED_URL])
def test_results_in_redis_and_memcached(project_worker, backend: str,
                                        request: pytest.FixtureRequest) -> None:  # noqa: F811
    request.getfixturevalue("redis_available" if backend.startswith("redis")
                            else "memcached_available")
    project_worker("-c", "1", settings={"CELERY_RESULT_BACKEND": backend})
    with override_settings(CELERY_RESULT_BACKEND=backend):
        ok, failed = add.delay(20, 22), fail.delay("remote")
        assert ok.get(timeout=20) == 42
        with pytest.raises(ValueError, match="remote"):
            failed.get(timeout=20)
        assert GroupResult(None, [ok, failed]).completed_count() == 1
    assert not TaskResult.objects.exists()  # nothing went to the database
