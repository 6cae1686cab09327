"""CELERY_ROUTES in all its forms, CELERY_QUEUES, CELERY_ANNOTATIONS in all its forms."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from djqueue import states
from djqueue.client.base import app
from djqueue.exceptions import ImproperlyConfigured, QueueNotFound
from djqueue.models import Message
from djqueue.worker.loop import Worker
from example_project.demo.tasks import record
from tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


class AddRouter:
    """A Celery-style router class (used through its dotted path)."""

    def route_for_task(self, task, args=None, kwargs=None):
        if task == "tasks.add":
            return {"queue": "by-class", "priority": 3}
        return None


class Annotator:
    """A Celery-style annotation object (used through its dotted path)."""

    def annotate(self, task):
        if task.name == "tasks.add":
            return {"max_retries": 11}
        return None


def queued() -> tuple[str, int]:
    message = Message.objects.get()
    Message.objects.all().delete()
    return message.queue, message.priority


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ({"tasks.add": "low-priority"}, ("low-priority", 0)),
        ({"tasks.add": {"queue": "low-priority", "priority": 5}}, ("low-priority", 5)),
        ({"tasks.*": "globbed"}, ("globbed", 0)),
        ({"other.*": "no", "tasks.a?d": "question-mark"}, ("question-mark", 0)),
        (AddRouter(), ("by-class", 3)),
        (lambda name, args, kwargs: "callable" if args == [1, 2] else None, ("callable", 0)),
        ("tests.test_routing_annotations.AddRouter", ("by-class", 3)),
        ([{"other": "no"}, "tests.test_routing_annotations.AddRouter", {"tasks.add": "late"}],
         ("by-class", 3)),
        ({"other": "no"}, ("celery", 0)),
    ],
)
def test_route_forms(routes: object, expected: tuple[str, int]) -> None:
    with override_settings(CELERY_ROUTES=routes):
        add.delay(1, 2)
    assert queued() == expected


def test_task_4_spelling_and_precedence() -> None:
    @app.task(name="tests.own_queue", queue="own")
    def own() -> None: ...

    with override_settings(CELERY_TASK_ROUTES={"tests.own_queue": "routed"}):
        own.delay()
        assert queued() == ("routed", 0)  # routes > task option
        own.apply_async(queue="called")
        assert queued() == ("called", 0)  # call > routes
    own.delay()
    assert queued() == ("own", 0)  # task option > default queue
    with override_settings(CELERY_DEFAULT_QUEUE="fallback"):
        add.delay(1, 1)
        assert queued() == ("fallback", 0)


def test_default_worker_never_runs_a_routed_task_and_q_worker_does(start_worker) -> None:
    with override_settings(CELERY_ROUTES={"tasks.add": "low-priority"}):
        routed = add.delay(2, 2)
    default = record.delay("default")
    start_worker("-c", "1")
    assert default.get(timeout=10) == "default"
    time.sleep(0.3)
    assert routed.state == states.PENDING
    assert Message.objects.get(task_id=routed.id).queue == "low-priority"
    start_worker("-c", "1", "-Q", "low-priority")
    assert routed.get(timeout=10) == 4


def test_celery_queues_are_what_a_default_worker_consumes() -> None:
    with override_settings(CELERY_QUEUES=["celery", "reports"]):
        assert Worker(app, pool="solo").queues == ["celery", "reports"]
    with override_settings(CELERY_QUEUES={"a": {}, "b": {}}):
        assert Worker(app, pool="solo").queues == ["a", "b"]
    assert Worker(app, pool="solo").queues == ["celery"]


def test_missing_queues_refused_when_creation_is_off() -> None:
    with override_settings(CELERY_QUEUES=["celery"], CELERY_CREATE_MISSING_QUEUES=False):
        with pytest.raises(QueueNotFound, match="'elsewhere' is not in CELERY_QUEUES"):
            add.apply_async((1, 1), queue="elsewhere")
        add.delay(1, 1)
    assert not Message.objects.filter(queue="elsewhere").exists()
    assert queued() == ("celery", 0)
    with override_settings(CELERY_QUEUES=["celery"]):  # created on demand by default
        add.apply_async((1, 1), queue="elsewhere")
        assert Worker(app, pool="solo", queues=["elsewhere"]).queues == ["elsewhere"]
    assert queued() == ("elsewhere", 0)
    with override_settings(CELERY_QUEUES=["celery"], CELERY_CREATE_MISSING_QUEUES=False):
        with pytest.raises(ImproperlyConfigured, match="'elsewhere' is not in CELERY_QUEUES"):
            Worker(app, pool="solo", queues=["celery", "elsewhere"])


@pytest.mark.parametrize(
    "annotations",
    [
        {"tasks.add": {"rate_limit": "10/m", "max_retries": 11}},
        [{"other": {}}, {"tasks.add": {"rate_limit": "10/m"}}, {"*": {"max_retries": 11}}],
        ["tests.test_routing_annotations.Annotator", {"*": {"rate_limit": "10/m"}}],
        {"*": {"rate_limit": "10/m", "max_retries": 11}},
    ],
)
def test_annotation_forms(annotations: object) -> None:
    assert (add.rate_limit, add.max_retries) == (None, 3)
    with override_settings(CELERY_ANNOTATIONS=annotations):
        task = app.tasks["tasks.add"]
        assert (task.rate_limit, task.max_retries) == ("10/m", 11)
    # Taken away again with the setting: the decorator's values come back.
    assert app.tasks["tasks.add"] is add
    assert (add.rate_limit, add.max_retries) == (None, 3)


def test_a_task_held_directly_loses_its_annotations_with_the_setting() -> None:
    """Not only once the app hands it out again: a test's annotations showed in the next test
    that read ``add.rate_limit`` (pytest-xdist's order)."""
    with override_settings(CELERY_ANNOTATIONS={"tasks.add": {"rate_limit": "10/m"}}):
        assert app.tasks["tasks.add"].rate_limit == "10/m"
    assert add.rate_limit is None
    with override_settings(CELERY_TASK_ANNOTATIONS={"*": {"max_retries": 11}}):
        assert app.tasks["tasks.add"].max_retries == 11
    assert add.max_retries == 3


def test_task_entry_wins_over_star_and_any_attribute_can_be_set() -> None:
    annotations = {"*": {"acks_late": True, "time_limit": 5},
                   "tasks.add": {"time_limit": 30, "ignore_result": True}}
    with override_settings(CELERY_TASK_ANNOTATIONS=annotations):
        task = app.tasks["tasks.add"]
        assert (task.acks_late, task.time_limit, task.ignore_result) == (True, 30, True)
        assert app.tasks["example_project.demo.tasks.record"].time_limit == 5


def test_annotations_take_effect_at_send_time_and_on_the_worker(record_file) -> None:
    with override_settings(CELERY_ANNOTATIONS={"tasks.add": {"queue": "annotated"}}):
        add.delay(1, 1)
    assert queued() == ("annotated", 0)
    with override_settings(CELERY_ANNOTATIONS={"*": {"ignore_result": True}}):
        worker = Worker(app, pool="solo", poll_interval=0)
        worker.start()
        result = record.delay("x")
        for _ in range(3):
            worker.loop()
        assert record_file.read_text().startswith("x ")
        assert result.state == states.PENDING  # ignore_result from the annotation


def test_bad_annotation_is_a_clear_error() -> None:
    with override_settings(CELERY_ANNOTATIONS={"tasks.add": {"rate_limt": "1/s"}}):
        with pytest.raises(ImproperlyConfigured, match="'rate_limt'.*not a task attribute"):
            add.delay(1, 1)
    assert not Message.objects.exists()
