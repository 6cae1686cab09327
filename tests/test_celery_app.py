"""Celery's app object and Celery ≥ 4 setting names, in-process (the project that uses them
with real workers: tests/test_celery_project.py)."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

from djqueue import AsyncResult, Celery, Task, current_app, shared_task
from djqueue.canvas import chain, chord, group
from djqueue.client import celery_app
from djqueue.client.base import app as djqueue_app
from djqueue.client.call_checks import check_arguments
from djqueue.models import Message
from djqueue.setting_names import ALIASES, NEW_NAMES, canonical_name, namespaced
from tasks import add


@pytest.fixture(autouse=True)
def _restore_setup() -> Iterator[None]:
    """The app is one per process: put back what a test recorded on it."""
    main, discovery = celery_app._Setup.main, list(celery_app._Setup.discovery)
    yield
    celery_app._Setup.main = main
    celery_app._Setup.discovery[:] = discovery


def test_celery_is_the_one_app_of_the_process(caplog: pytest.LogCaptureFixture, db) -> None:
    app = Celery("proj")
    assert app is Celery() is current_app
    assert isinstance(app, Celery) and app.main == "proj"
    assert app.tasks is djqueue_app.tasks and app._get_current_object() is djqueue_app
    assert app.conf is djqueue_app.conf
    with caplog.at_level(logging.WARNING, logger="djqueue.app"):
        assert Celery("other") is app
    assert app.main == "proj" and "one process has one app" in caplog.text
    assert app.send_task("tasks.add", args=[1, 1]).id  # the App's methods, through the handle


def test_celery_arguments_are_runtime_overrides() -> None:
    app = Celery(broker="django://default", backend="django-db", include=["tests.imported_tasks"],
                 changes={"task_default_queue": "q1"}, set_as_current=True)
    assert app.conf.BROKER_URL == "django://default"
    assert app.conf.result_backend == "django-db"
    assert app.conf.CELERY_INCLUDE == ["tests.imported_tasks"]
    assert app.conf.task_default_queue == app.conf.CELERY_DEFAULT_QUEUE == "q1"
    with pytest.raises(TypeError, match="loader"):
        Celery(loader="celery.loaders.app:AppLoader")


def test_lowercase_names_through_app_conf(db) -> None:
    app = Celery("proj")
    assert app.conf.result_backend == "database"  # example_project's CELERY_RESULT_BACKEND
    app.conf.task_always_eager = True
    assert app.conf.CELERY_ALWAYS_EAGER is True
    assert add.delay(2, 2).get() == 4  # ran here, eagerly
    app.conf.update(task_always_eager=False, worker_concurrency=3)
    assert app.conf.CELERYD_CONCURRENCY == 3 and not app.conf.task_always_eager


def test_config_from_a_module_of_lowercase_names(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("celeryconfig_for_test")
    module.task_default_queue = "from-module"  # type: ignore[attr-defined]
    module.CELERY_DEFAULT_PRIORITY = 7  # type: ignore[attr-defined]  # an old name works too
    monkeypatch.setitem(sys.modules, module.__name__, module)
    app = Celery("proj")
    app.config_from_object(module.__name__)
    assert app.conf.CELERY_DEFAULT_QUEUE == "from-module"
    assert app.conf.task_default_priority == 7
    assert app.conf.CELERY_ACKS_LATE is False  # not in the module: Django settings, then default
    app.config_from_object({"TASKS_TASK_DEFAULT_QUEUE": "namespaced"}, namespace="TASKS")
    assert app.conf.task_default_queue == "namespaced"
    with override_settings(JOBS_TASK_DEFAULT_QUEUE="django-namespace"):
        app.config_from_object("django.conf:settings", namespace="JOBS")
        assert app.conf.task_default_queue == "django-namespace"
    app.config_from_object("django.conf:settings", namespace="CELERY")
    assert app.conf.task_default_queue == "celery"
    app.config_from_object("no.such.celeryconfig")  # imported on first use, as in Celery
    with pytest.raises(ImportError):
        app.conf.CELERY_DEFAULT_QUEUE  # noqa: B018


def test_autodiscover_tasks_of_named_packages(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "discovered_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(
        "from djqueue import shared_task\n\n@shared_task\ndef job():\n    return 'done'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("proj")
    app.tasks  # noqa: B018 - the app has discovered its tasks already
    app.autodiscover_tasks(lambda: ["discovered_pkg", "tests"], related_name="jobs")
    assert "discovered_pkg.jobs.job" in app.tasks  # imported at once; tests has no jobs module
    # Celery's Django guide passes INSTALLED_APPS, whose entries may name AppConfig classes.
    app.autodiscover_tasks(["djqueue.apps.DjqueueConfig", "example_project.demo"], force=True)
    del djqueue_app.tasks["discovered_pkg.jobs.job"]
    monkeypatch.delitem(sys.modules, "discovered_pkg.jobs")
    monkeypatch.delitem(sys.modules, "discovered_pkg")


def test_register_task_names_a_class_based_task(db) -> None:
    class Multiply(Task):
        def run(self, x: int, y: int) -> int:
            return x * y

    app = Celery("proj")
    task = app.register_task(Multiply())
    assert task.name == f"{__name__}.Multiply" and app.tasks[task.name] is task
    assert task.app is djqueue_app and task.apply((3, 4)).get() == 12
    del djqueue_app.tasks[task.name]


def test_shared_task_and_app_task_share_the_registry() -> None:
    @shared_task(name="test_celery_app.shared")
    def shared() -> str:
        return "s"

    @current_app.task(name="test_celery_app.by_app")
    def by_app() -> str:
        return "a"

    assert {"test_celery_app.shared", "test_celery_app.by_app"} <= set(djqueue_app.tasks)
    del djqueue_app.tasks["test_celery_app.shared"], djqueue_app.tasks["test_celery_app.by_app"]


def test_the_name_table_is_complete_and_consistent() -> None:
    from djqueue.conf import DEFAULTS

    celery_settings = {name for name in DEFAULTS if not name.startswith("DJQUEUE_")}
    assert set(NEW_NAMES.values()) == celery_settings  # every Celery setting has its new name
    for new, old in NEW_NAMES.items():
        assert canonical_name(new) == canonical_name(namespaced(new)) == old
    assert ALIASES["CELERY_TASK_ALWAYS_EAGER"] == "CELERY_ALWAYS_EAGER"
    assert "CELERY_RESULT_BACKEND" not in ALIASES  # spelled alike in both sets


def messages(**settings: object) -> list[checks.CheckMessage]:
    with override_settings(**settings):
        return [m for m in checks.run_checks(tags=["djqueue"]) if m.id.startswith("djqueue.")]


def test_mixing_old_and_new_names_is_an_error_with_a_hint() -> None:
    found = messages(CELERY_ALWAYS_EAGER=False, CELERY_TASK_ROUTES={"tasks.add": "x"})
    error = next(m for m in found if m.id == "djqueue.E001")
    # example_project's own settings use old names (BROKER_TRANSPORT_OPTIONS, ...)
    assert "CELERY_ALWAYS_EAGER" in error.msg and "CELERY_TASK_ROUTES" in error.msg
    assert "CELERY_ALWAYS_EAGER -> CELERY_TASK_ALWAYS_EAGER" in error.hint


def test_names_of_one_set_or_names_alike_in_both_are_fine() -> None:
    assert not [m for m in messages(CELERY_RESULT_BACKEND="database", CELERY_IMPORTS=["tasks"],
                                    CELERY_ACKS_LATE=True) if m.id == "djqueue.E001"]


def test_unknown_new_names_stay_warnings() -> None:
    found = messages(CELERY_WORKER_LOST_WAIT=10.0)
    assert {m.id for m in found} == {"djqueue.W001"}
    assert "CELERY_WORKER_LOST_WAIT" in found[0].msg


def test_an_async_result_is_its_id() -> None:
    result = AsyncResult("x")
    assert str(result) == "x" and result == "x" and "x" == result and result != "y"
    assert result == AsyncResult("x") and hash(result) == hash("x")
    assert f"{add.AsyncResult('abc')}" == "abc"


def test_arguments_are_checked_at_call_time(db) -> None:
    with pytest.raises(TypeError, match=r"tasks\.add\(\) missing a required argument: 'y'"):
        add.delay(5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        add.apply_async((1, 2), {"z": 3})
    assert not Message.objects.exists()  # nothing was sent
    Celery("proj").conf.task_always_eager = True  # checked before running eagerly too
    with pytest.raises(TypeError, match="too many positional arguments"):
        add.delay(1, 2, 3)

    @shared_task(typing=False, name="test_celery_app.untyped")
    def untyped(x: int) -> int:
        return x

    Celery("proj").conf.task_always_eager = False
    assert untyped.delay().id  # typing=False: sent as it is (the worker's call fails)
    assert Message.objects.filter(task_name="test_celery_app.untyped").count() == 1
    del djqueue_app.tasks["test_celery_app.untyped"]


def test_a_canvas_checks_the_calls_it_sends_now(db) -> None:
    """As Celery's canvas, whose calls sent at once go through Task.apply_async: a chain's first
    step, a group's members, a chord's header; not the steps sent later (they get the result of
    the one before) nor links; never send_task (the task may be unknown here)."""
    missing = r"tasks\.add\(\) missing a required argument: 'y'"
    for canvas in (add.s(5), chain(add.s(5), add.s(1)), group(add.s(1, 2), add.s(5)),
                   group(add.s(1, 2).set(link=add.s(3)), add.s(5)),  # written by the planner
                   group(chain(add.s(5), add.s(1))), chord([add.s(1, 2), add.s(5)], add.s(1))):
        with pytest.raises(TypeError, match=missing):
            canvas.delay()
    with pytest.raises(TypeError, match="too many positional arguments"):
        chord([], add.s(1, 2)).delay()  # an empty header: the body at once, with []
    assert not Message.objects.exists()  # nothing was sent
    add.s(5).delay(1)
    group(add.s(5)).delay(1)  # arguments put first
    chain(add.s(5, 1), add.s(1, 2, 3)).delay()  # the second step is checked by no one
    add.s(1, 2).set(link=add.s(7, 8, 9)).delay()
    djqueue_app.send_task("tasks.add", (5,))
    assert Message.objects.filter(task_name="tasks.add").count() == 5


def test_a_soft_time_limit_above_the_hard_one_is_refused(db) -> None:
    with pytest.raises(ValueError, match=r"Task test_celery_app.limits: soft_time_limit \(10\) is "
                                         r"greater than time_limit \(5\)"):
        shared_task(name="test_celery_app.limits", soft_time_limit=10, time_limit=5)(lambda: 1)
    with pytest.raises(ValueError, match=r"Call of tasks.add: soft_time_limit \(3\)"):
        add.apply_async((1, 1), soft_time_limit=3, time_limit=2)
    with pytest.raises(ValueError, match="soft_time_limit"):
        djqueue_app.send_task("tasks.add", (1, 1), soft_time_limit=3, time_limit=2)
    assert not Message.objects.exists()
    add.apply_async((1, 1), soft_time_limit=2, time_limit=3)  # in order: sent
    found = messages(CELERYD_TASK_SOFT_TIME_LIMIT=60, CELERYD_TASK_TIME_LIMIT=30)
    assert "djqueue.E012" in {m.id for m in found}


def test_a_worker_with_no_task_says_what_to_add(start_worker) -> None:
    # The seed's first run: tasks.py beside manage.py, not listed in CELERY_IMPORTS.
    worker = start_worker("-c", "1", "-P", "solo", settings={
        "INSTALLED_APPS": ["django.contrib.contenttypes", "django.contrib.auth", "djqueue"],
        "CELERY_IMPORTS": []})
    log = worker.log()
    assert "[tasks]\n  (none registered)\n\nNo task is registered" in log
    assert 'CELERY_IMPORTS = ("tasks",)' in log


def _positional(a, b=1): ...
def _varargs(a, *rest): ...
def _keyword_only(a, *, k): ...
def _anything(*args, **kwargs): ...


@pytest.mark.parametrize("fun", [_positional, _varargs, _keyword_only, _anything])
@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((1,), {"k": 2}), ((), {"a": 1}),
    ((1,), {"a": 1}), ((1,), {"b": 2}), ((1,), {"zz": 0}),
])
def test_the_argument_check_agrees_with_python(fun, args, kwargs) -> None:
    task = djqueue_app.task(name=f"test_celery_app.{fun.__name__}")(fun)
    try:
        fun(*args, **kwargs)
    except TypeError as exc:
        with pytest.raises(TypeError, match=f"test_celery_app.{fun.__name__}"):
            check_arguments(task, args, kwargs)
        assert "argument" in str(exc)
    else:
        check_arguments(task, args, kwargs)
    del djqueue_app.tasks[task.name]
