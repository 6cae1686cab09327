"""Each remaining setting changes what happens: serializers and accepted content, eager mode,
time zones, task defaults, worker defaults and task imports."""

from __future__ import annotations

import datetime
import decimal
import sys
import uuid
import zoneinfo
from collections.abc import Iterator

import pytest
from django.test import override_settings

from djqueue import states
from djqueue.client.base import App, app
from djqueue.exceptions import ContentDisallowed
from djqueue.models import Message, TaskResult
from djqueue.result import EagerResult
from djqueue.serialization import CONTENT_TYPES
from djqueue.client.task import Task
from djqueue.worker.loop import Worker
from example_project.demo.tasks import DemoError, fail, record
from tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@app.task(name="tests.echo")
def echo(*args):
    return list(args)


@app.task(name="tests.as_set")
def as_set(*args):
    return set(args)


def run_worker(rounds: int = 4) -> Worker:
    worker = Worker(app, pool="solo", poll_interval=0)
    worker.start()
    for _ in range(rounds):
        worker.loop()
    return worker


def test_json_keeps_dates_decimals_and_uuids_both_ways() -> None:
    values = [datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
              datetime.date(2026, 1, 2), datetime.time(3, 4, 5), decimal.Decimal("1.10"),
              uuid.UUID(int=7)]
    result = echo.delay(*values)
    assert Message.objects.get().content_type == CONTENT_TYPES["json"]
    run_worker()
    assert result.get(timeout=1) == values


def test_pickle_is_refused_unless_accepted_and_the_message_is_kept(record_file) -> None:
    with override_settings(CELERY_TASK_SERIALIZER="pickle"):
        refused = record.delay("never")
    run_worker()
    assert refused.state == states.FAILURE
    with pytest.raises(ContentDisallowed, match="CELERY_ACCEPT_CONTENT"):
        refused.get(timeout=1)
    message = Message.objects.get(task_id=refused.id)
    assert message.state == "rejected" and "ContentDisallowed" in message.error
    assert record_file.read_text() == ""  # never executed
    with override_settings(CELERY_TASK_SERIALIZER="pickle", CELERY_ACCEPT_CONTENT=["json", "pickle"]):
        accepted = record.delay("ran")
        run_worker()
        assert accepted.get(timeout=1) == "ran"


@pytest.fixture
def pickled() -> Iterator[Task]:
    """A task with ``serializer="pickle"``, registered for one test only (the system checks
    rightly object to it while pickle is not accepted)."""
    task = app.task(name="tests.pickled", serializer="pickle")(lambda value: value)
    yield task
    del app._tasks[task.name]


def test_per_task_and_per_call_serializer(pickled: Task) -> None:
    pickled.delay(1)
    add.apply_async((1, 1), serializer="pickle")
    pickled.apply_async((1,), serializer="json")
    assert list(Message.objects.order_by("id").values_list("content_type", flat=True)) == [
        CONTENT_TYPES["pickle"], CONTENT_TYPES["pickle"], CONTENT_TYPES["json"]]


def test_result_serializer() -> None:
    with override_settings(CELERY_RESULT_SERIALIZER="pickle", CELERY_ACCEPT_CONTENT=["json", "pickle"]):
        result = as_set.delay(1, 2)  # a set survives pickle, not json
        run_worker()
        assert TaskResult.objects.get().content_type == CONTENT_TYPES["pickle"]
        assert result.get(timeout=1) == {1, 2}


@pytest.mark.parametrize("spelling", ["CELERY_ALWAYS_EAGER", "CELERY_TASK_ALWAYS_EAGER"])
def test_always_eager(spelling: str) -> None:
    with override_settings(**{spelling: True}):
        result = add.delay(2, 3)
        failed = fail.delay("eager")
    assert isinstance(result, EagerResult) and result.get() == 5 and result.successful()
    assert failed.failed() and isinstance(failed.result, DemoError)
    with pytest.raises(DemoError):
        failed.get()
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "spelling", ["CELERY_EAGER_PROPAGATES_EXCEPTIONS", "CELERY_TASK_EAGER_PROPAGATES"])
def test_eager_propagates(spelling: str) -> None:
    with override_settings(CELERY_ALWAYS_EAGER=True, **{spelling: True}):
        with pytest.raises(DemoError, match="at call time"):
            fail.delay("at call time")


def naive_eta_available_at(**settings: object) -> datetime.datetime:
    naive = datetime.datetime(2030, 6, 1, 12, 0)
    with override_settings(**settings):
        add.apply_async((1, 1), eta=naive, expires=naive + datetime.timedelta(hours=1))
    message = Message.objects.get()
    Message.objects.all().delete()
    assert message.expires - message.available_at == datetime.timedelta(hours=1)
    return message.available_at


def test_naive_eta_is_read_in_celerys_time_zone() -> None:
    noon = datetime.datetime(2030, 6, 1, 12, 0)
    utc, tokyo = datetime.timezone.utc, zoneinfo.ZoneInfo("Asia/Tokyo")
    assert naive_eta_available_at() == noon.replace(tzinfo=utc)
    assert naive_eta_available_at(CELERY_TIMEZONE="Asia/Tokyo") == noon.replace(tzinfo=tokyo)
    # Without UTC, local time: Django's TIME_ZONE.
    assert naive_eta_available_at(CELERY_ENABLE_UTC=False, TIME_ZONE="Asia/Tokyo") == noon.replace(
        tzinfo=tokyo)


def test_track_started_setting() -> None:
    seen = []

    @app.task(name="tests.own_state", bind=True)
    def own_state(self):
        seen.append(app.AsyncResult(self.request.id).state)

    own_state.delay()
    run_worker()
    with override_settings(CELERY_TASK_TRACK_STARTED=True):
        own_state.delay()
        run_worker()
    assert seen == [states.PENDING, states.STARTED]


@pytest.mark.parametrize("spelling", ["CELERY_ACKS_LATE", "CELERY_TASK_ACKS_LATE"])
def test_acks_late_setting_reaches_the_job(spelling: str) -> None:
    worker = Worker(app, pool="solo")
    from djqueue.broker import operations

    add.delay(1, 1)
    claimed = operations("default").claim(["celery"], 1, "t", None, 60)[0]
    assert worker.job_for(claimed).acks_late is False
    with override_settings(**{spelling: True}):
        assert worker.job_for(claimed).acks_late is True


def test_worker_settings() -> None:
    with override_settings(CELERYD_CONCURRENCY=3, CELERYD_PREFETCH_MULTIPLIER=2,
                           CELERYD_POOL="threads"):
        worker = Worker(app)
        assert (worker.concurrency, worker.prefetch_limit, worker.pool_name) == (3, 6, "threads")
    with override_settings(CELERY_WORKER_CONCURRENCY=5, CELERY_WORKER_PREFETCH_MULTIPLIER=1,
                           CELERY_WORKER_POOL="solo"):
        worker = Worker(app)
        assert (worker.concurrency, worker.prefetch_limit, worker.pool_name) == (1, 1, "solo")


def test_celery_imports() -> None:
    assert "tests.imported_tasks" not in sys.modules
    App().autodiscover()
    assert "tests.imported_tasks" not in sys.modules
    with override_settings(CELERY_IMPORTS=("tests.imported_tasks",)):
        App().autodiscover()
    assert "tests.imported_tasks.double" in app._tasks
