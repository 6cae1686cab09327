"""The configuration object (every setting, its default and its Celery ≥4 alias) and the Django
system checks that report bad values."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import zoneinfo

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from djqueue.client.base import App, app
from djqueue.conf import ALIASES, DEFAULTS

from .conftest import ROOT

#: Every setting the configuration issue names, with Celery 3.1's default.
DOCUMENTED_DEFAULTS = {
    "CELERY_ROUTES": None,
    "CELERY_ANNOTATIONS": None,
    "CELERY_DEFAULT_QUEUE": "celery",
    "CELERY_QUEUES": None,
    "CELERY_CREATE_MISSING_QUEUES": True,
    "CELERY_DEFAULT_RATE_LIMIT": None,
    "CELERY_DISABLE_RATE_LIMITS": False,
    "CELERY_TASK_SERIALIZER": "json",
    "CELERY_RESULT_SERIALIZER": "json",
    "CELERY_ACCEPT_CONTENT": ["json"],
    "CELERY_RESULT_BACKEND": None,
    "CELERY_CACHE_BACKEND": "default",
    "CELERY_TASK_RESULT_EXPIRES": 86400,
    "CELERY_IGNORE_RESULT": False,
    "CELERY_STORE_ERRORS_EVEN_IF_IGNORED": False,
    "CELERY_TRACK_STARTED": False,
    "CELERY_ALWAYS_EAGER": False,
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": False,
    "CELERY_IMPORTS": (),
    "CELERY_ACKS_LATE": False,
    "CELERYD_CONCURRENCY": 0,
    "CELERYD_PREFETCH_MULTIPLIER": 4,
    "CELERYD_POOL": "prefork",
    "CELERYD_MAX_TASKS_PER_CHILD": None,
    "CELERYD_TASK_TIME_LIMIT": None,
    "CELERYD_TASK_SOFT_TIME_LIMIT": None,
    "CELERY_TIMEZONE": None,
    "CELERY_ENABLE_UTC": True,
}

#: Celery ≥4 names (Django's CELERY_ namespace) that must read the same setting.
NEW_NAMES = {
    "CELERY_TASK_ROUTES": "CELERY_ROUTES",
    "CELERY_TASK_ANNOTATIONS": "CELERY_ANNOTATIONS",
    "CELERY_TASK_DEFAULT_QUEUE": "CELERY_DEFAULT_QUEUE",
    "CELERY_TASK_QUEUES": "CELERY_QUEUES",
    "CELERY_TASK_CREATE_MISSING_QUEUES": "CELERY_CREATE_MISSING_QUEUES",
    "CELERY_TASK_DEFAULT_RATE_LIMIT": "CELERY_DEFAULT_RATE_LIMIT",
    "CELERY_WORKER_DISABLE_RATE_LIMITS": "CELERY_DISABLE_RATE_LIMITS",
    "CELERY_RESULT_EXPIRES": "CELERY_TASK_RESULT_EXPIRES",
    "CELERY_TASK_IGNORE_RESULT": "CELERY_IGNORE_RESULT",
    "CELERY_TASK_STORE_ERRORS_EVEN_IF_IGNORED": "CELERY_STORE_ERRORS_EVEN_IF_IGNORED",
    "CELERY_TASK_TRACK_STARTED": "CELERY_TRACK_STARTED",
    "CELERY_TASK_ALWAYS_EAGER": "CELERY_ALWAYS_EAGER",
    "CELERY_TASK_EAGER_PROPAGATES": "CELERY_EAGER_PROPAGATES_EXCEPTIONS",
    "CELERY_TASK_ACKS_LATE": "CELERY_ACKS_LATE",
    "CELERY_WORKER_CONCURRENCY": "CELERYD_CONCURRENCY",
    "CELERY_WORKER_PREFETCH_MULTIPLIER": "CELERYD_PREFETCH_MULTIPLIER",
    "CELERY_WORKER_POOL": "CELERYD_POOL",
    "CELERY_WORKER_MAX_TASKS_PER_CHILD": "CELERYD_MAX_TASKS_PER_CHILD",
    "CELERY_TASK_TIME_LIMIT": "CELERYD_TASK_TIME_LIMIT",
    "CELERY_TASK_SOFT_TIME_LIMIT": "CELERYD_TASK_SOFT_TIME_LIMIT",
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED_DEFAULTS))
def test_every_setting_has_celerys_default(name: str) -> None:
    assert name in DEFAULTS
    with override_settings():
        from django.conf import settings

        if hasattr(settings, name):
            delattr(settings, name)
        assert getattr(App().conf, name) == DOCUMENTED_DEFAULTS[name]


@pytest.mark.parametrize(("new", "old"), sorted(NEW_NAMES.items()))
def test_celery_4_name_is_an_alias(new: str, old: str) -> None:
    assert ALIASES[new] == old
    conf = App().conf
    with override_settings(**{new: "from-new-name"}):
        from django.conf import settings

        if hasattr(settings, old):
            delattr(settings, old)
        assert getattr(conf, old) == "from-new-name"
        assert getattr(conf, new) == "from-new-name"
        conf.update({new: "runtime"})  # runtime overrides accept either spelling
        assert getattr(conf, old) == "runtime"


def test_nothing_is_read_at_import_or_construction() -> None:
    conf = App().conf
    with override_settings(CELERY_DEFAULT_QUEUE="late"):
        assert conf.CELERY_DEFAULT_QUEUE == "late"
    assert conf.CELERY_DEFAULT_QUEUE == "celery"


def test_timezone_for_naive_datetimes() -> None:
    conf = App().conf
    assert conf.timezone == datetime.timezone.utc
    with override_settings(CELERY_TIMEZONE="Europe/Paris"):
        assert conf.timezone == zoneinfo.ZoneInfo("Europe/Paris")
    with override_settings(CELERY_ENABLE_UTC=False, TIME_ZONE="America/New_York"):
        assert str(conf.timezone) == "America/New_York"


def test_result_expires_accepts_seconds_and_timedeltas() -> None:
    conf = App().conf
    assert conf.result_expires == 86400
    with override_settings(CELERY_TASK_RESULT_EXPIRES=datetime.timedelta(hours=1)):
        assert conf.result_expires == 3600
    with override_settings(CELERY_RESULT_EXPIRES=None):
        assert conf.result_expires is None


def ids(**settings: object) -> set[str]:
    """The djqueue check ids reported under ``settings``."""
    with override_settings(**settings):
        return {m.id for m in checks.run_checks(tags=["djqueue"]) if m.id.startswith("djqueue.")}


def test_clean_settings_pass_the_checks() -> None:
    assert ids() == set()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"CELERY_ROUTES": {"a": "x"}, "CELERY_TASK_ROUTES": {"a": "y"}}, "djqueue.E001"),
        ({"CELERY_DEFAULT_RATE_LIMIT": "ten a minute"}, "djqueue.E002"),
        ({"CELERY_ANNOTATIONS": {"tasks.add": {"rate_limit": "5/fortnight"}}}, "djqueue.E002"),
        ({"CELERY_TASK_SERIALIZER": "yaml"}, "djqueue.E003"),
        ({"CELERY_ACCEPT_CONTENT": ["json", "msgpack"]}, "djqueue.E003"),
        ({"CELERY_TASK_SERIALIZER": "pickle"}, "djqueue.E004"),
        ({"CELERY_RESULT_SERIALIZER": "pickle"}, "djqueue.E004"),
        ({"CELERY_ANNOTATIONS": {"tasks.add": {"serializer": "pickle"}}}, "djqueue.E004"),
        ({"CELERY_RESULT_BACKEND": "mongodb"}, "djqueue.E005"),
        ({"CELERY_RESULT_BACKEND": "rpc://"}, "djqueue.E005"),
        ({"CELERY_RESULT_BACKEND": "amqp://guest@localhost//"}, "djqueue.E005"),
        ({"CELERY_RESULT_BACKEND": "redis://localhost:port/0"}, "djqueue.E005"),
        ({"CELERY_RESULT_BACKEND": "cache+memcached://"}, "djqueue.E005"),
        ({"BROKER_URL": "django://nowhere"}, "djqueue.E006"),
        ({"CELERY_ANNOTATIONS": {"tasks.add": {"no_such_attribute": 1}}}, "djqueue.E007"),
        ({"CELERY_ANNOTATIONS": 42}, "djqueue.E007"),
        ({"CELERY_RESULT_BACKEND": "cache", "CELERY_CACHE_BACKEND": "absent"}, "djqueue.E008"),
        ({"CELERY_ROUTES": "no.such.module.Router"}, "djqueue.E009"),
        ({"CELERY_QUEUES": "celery"}, "djqueue.E009"),
        ({"CELERY_TIMEZONE": "Mars/Olympus_Mons"}, "djqueue.E011"),
        ({"CELERYD_POOL": "eventlet"}, "djqueue.E012"),
        ({"CELERYD_CONCURRENCY": -2}, "djqueue.E012"),
        ({"DJQUEUE_POOL_BATCH_WINDOW": -0.1}, "djqueue.E012"),
        ({"DJQUEUE_POOL_BATCH_WINDOW": "5ms"}, "djqueue.E012"),
        ({"DJQUEUE_LISTEN_DATABASE": "direct"}, "djqueue.E014"),
        ({"CELERY_SEND_TASK_ERROR_EMAILS": True}, "djqueue.W001"),
        ({"BROKER_URL": "amqp://guest@localhost//"}, "djqueue.W002"),
        ({"CELERY_ROUTES": {"tasks.addd": "low-priority"}}, "djqueue.W003"),
        ({"CELERY_ANNOTATIONS": [{"tasks.ad": {"rate_limit": "1/s"}}]}, "djqueue.W003"),
    ],
)
def test_checks_report_bad_values(settings: dict[str, object], expected: str) -> None:
    assert expected in ids(**settings)


def test_same_value_under_both_spellings_is_still_mixing_names() -> None:
    # Celery refuses old and new names in one configuration, whatever the values.
    assert ids(CELERY_ROUTES={"tasks.add": "x"}, CELERY_TASK_ROUTES={"tasks.add": "x"}) == {
        "djqueue.E001"}


def test_check_messages_have_hints() -> None:
    with override_settings(CELERY_DEFAULT_RATE_LIMIT="fast", CELERY_RESULT_BACKEND="mongodb"):
        messages = [m for m in checks.run_checks(tags=["djqueue"])]
    assert messages and all(m.hint for m in messages)
    assert "'N/s', 'N/m', 'N/h'" in str(messages)
    assert "'database'" in str(messages) and "'cache'" in str(messages)


@pytest.mark.django_db  # Django 6's checks look at the database too
def test_manage_py_check_fails_on_errors() -> None:
    with override_settings(CELERY_TASK_SERIALIZER="yaml"):
        with pytest.raises(SystemCheckError, match="djqueue.E003"):
            call_command("check")


def test_unknown_result_backend_is_improperly_configured() -> None:
    from djqueue.exceptions import ImproperlyConfigured

    with override_settings(CELERY_RESULT_BACKEND="mongodb"):
        with pytest.raises(ImproperlyConfigured, match="'database'.*'cache'"):
            app.backend  # noqa: B018


def test_worker_start_up_warns_about_settings_it_ignores(start_worker) -> None:
    worker = start_worker("-c", "1", settings={"BROKER_URL": "redis://127.0.0.1:6379/0"})
    log = worker.log()
    assert "djqueue.W002" in log and "BROKER_URL = 'redis://127.0.0.1:6379/0' is ignored" in log


def manage_py_check(settings: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """``manage.py check`` in a process of its own, for settings that cannot change inside a
    running test process (DATABASES; task modules imported once per process)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
           "DJQUEUE_EXTRA_SETTINGS": json.dumps(settings)}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.process  # manage.py in subprocesses
def test_a_database_that_cannot_be_the_broker_stops_only_the_celery_command() -> None:
    """The project's own commands (check, migrate, runserver) need no broker: a warning there.
    `manage.py celery` does: an error, and it stops."""
    broken = {
        "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
                      "legacy": {"ENGINE": "django.db.backends.dummy"}},
        "BROKER_URL": "django://legacy",
    }
    done = manage_py_check(broken)
    assert done.returncode == 0, done.stderr
    assert "djqueue.W004" in done.stderr and "'legacy' is unknown" in done.stderr
    assert "HINT: Use mysql, postgresql, sqlite for the broker database." in done.stderr
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
           "DJQUEUE_EXTRA_SETTINGS": json.dumps(broken)}
    worker = subprocess.run([sys.executable, "manage.py", "celery", "worker"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode != 0
    assert "(djqueue.E006) Database 'legacy' is unknown" in worker.stderr
    assert "HINT: Use mysql, postgresql, sqlite" in worker.stderr


@pytest.mark.process  # manage.py check in a subprocess
def test_a_task_module_that_cannot_be_imported_is_an_error() -> None:
    done = manage_py_check({"CELERY_IMPORTS": ["tasks", "no_such_tasks_module"]})
    assert done.returncode != 0
    assert "djqueue.E010" in done.stderr and "no_such_tasks_module" in done.stderr
