"""The result-backend contract, run against every backend, and result expiry.

The cache backend is tested against a real Redis through Django's own ``RedisCache``
(``DJQUEUE_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/5``). Without a Redis these tests
are skipped with a reason, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import datetime
import io
import os
import time
import uuid
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from djqueue import states
from djqueue.client.base import app
from djqueue.backends import ResultBackend, ResultRecord
from djqueue.backends.cache import CacheBackend
from djqueue.backends.database import ID_SLICE, DatabaseBackend
from djqueue.backends.redis import RedisBackend
from djqueue.exceptions import ImproperlyConfigured
from djqueue.models import TaskResult
from djqueue.worker.loop import Worker
from example_project.demo.tasks import fail, record
from tasks import add

from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REDIS_URL = os.environ.get("DJQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
REDIS_CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "results": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "djqueue-tests",
    },
}
CACHE_SETTINGS = {"CACHES": REDIS_CACHES, "CELERY_RESULT_BACKEND": "cache",
                  "CELERY_CACHE_BACKEND": "results"}


@pytest.fixture
def redis_available() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} cannot be reached under CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} cannot be reached: {exc}")


#: The Redis result backend's tests use a database index of their own.
REDIS_RESULTS_URL = os.environ.get("DJQUEUE_TEST_REDIS_RESULTS_URL", "redis://127.0.0.1:6379/4")
MEMCACHED_URL = "cache+memcached://{}/".format(
    os.environ.get("DJQUEUE_TEST_MEMCACHED", "127.0.0.1:11211"))


@pytest.fixture
def memcached_available() -> None:
    try:
        CacheBackend(url=MEMCACHED_URL).cache.get("ping")
    except Exception as exc:  # noqa: BLE001 - pymemcache raises OSError and its own errors
        if os.environ.get("CI") == "true":
            pytest.fail(f"Memcached at {MEMCACHED_URL} cannot be reached under CI: {exc}")
        pytest.skip(f"Memcached at {MEMCACHED_URL} cannot be reached: {exc}")


@pytest.fixture(params=["database", "cache", "redis", "memcached"])
def backend(request: pytest.FixtureRequest) -> Iterator[ResultBackend]:
    if request.param == "database":
        yield DatabaseBackend(using="default", expires=60)
        return
    if request.param == "memcached":
        request.getfixturevalue("memcached_available")
        yield CacheBackend(expires=60, url=MEMCACHED_URL)
        return
    request.getfixturevalue("redis_available")
    if request.param == "redis":
        yield RedisBackend(REDIS_RESULTS_URL, expires=60)
        return
    with override_settings(CACHES=REDIS_CACHES):
        yield CacheBackend(expires=60, cache_alias="results")


def record_for(task_id: str, state: str = states.SUCCESS, **fields: object) -> ResultRecord:
    return ResultRecord(task_id, state, "tasks.add", **fields)  # type: ignore[arg-type]


def test_contract_unknown_id_is_none(backend: ResultBackend) -> None:
    assert backend.get(str(uuid.uuid4())) is None


def test_contract_round_trip_of_every_field(backend: ResultBackend) -> None:
    done = timezone.now().replace(microsecond=123000)
    stored = ResultRecord(
        str(uuid.uuid4()), states.FAILURE, "tasks.add", "application/json", '{"x":1}',
        "Traceback ...", "[1, 2]", "{}", "w1@host", 0.25, done,
    )
    backend.store([stored])
    assert backend.get(stored.task_id) == stored


def test_contract_last_record_of_an_id_wins(backend: ResultBackend) -> None:
    task_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    backend.store([record_for(task_id, states.STARTED), record_for(other),
                   record_for(task_id, states.SUCCESS, result="8")])
    assert backend.get(task_id).state == states.SUCCESS and backend.get(task_id).result == "8"
    assert backend.get(other).state == states.SUCCESS
    backend.store([record_for(task_id, states.FAILURE)])  # a later store replaces
    assert backend.get(task_id).state == states.FAILURE


def test_contract_get_many(backend: ResultBackend) -> None:
    stored = [record_for(str(uuid.uuid4()), result=str(i)) for i in range(3)]
    odd = record_for("an id with spaces, and " + "long " * 40)  # fine as a memcached key too
    backend.store([*stored, odd])
    unknown = str(uuid.uuid4())
    found = backend.get_many([r.task_id for r in stored] + [odd.task_id, unknown])
    assert found == {r.task_id: r for r in [*stored, odd]}
    assert backend.get_many([]) == {}


def test_contract_results_of(backend: ResultBackend) -> None:
    """What a chord's body reads: state, content type and encoded result, by id, more than a
    slice of ids at once (the database backend reads them in slices)."""
    stored = [record_for(str(uuid.uuid4()), result=str(i)) for i in range(ID_SLICE + 2)]
    failed = ResultRecord(str(uuid.uuid4()), states.FAILURE, "tasks.add", "application/json",
                          None, "Traceback ...")
    backend.store([*stored, failed])
    unknown = str(uuid.uuid4())
    found = backend.results_of([r.task_id for r in stored] + [failed.task_id, unknown])
    assert found == {**{r.task_id: (states.SUCCESS, "application/json", r.result)
                        for r in stored},
                     failed.task_id: (states.FAILURE, "application/json", None)}
    assert backend.results_of([]) == {}


def test_contract_forget(backend: ResultBackend) -> None:
    task_id = str(uuid.uuid4())
    backend.store([record_for(task_id)])
    backend.forget(task_id)
    assert backend.get(task_id) is None
    backend.forget(task_id)  # forgetting twice is fine


def test_contract_cleanup_keeps_fresh_results(backend: ResultBackend) -> None:
    task_id = str(uuid.uuid4())
    backend.store([record_for(task_id, date_done=timezone.now())])
    removed = backend.cleanup()
    assert removed is None or isinstance(removed, int)
    assert backend.get(task_id) is not None


def test_database_cleanup_removes_expired_results() -> None:
    backend = DatabaseBackend(expires=60)
    now = timezone.now()
    backend.store([record_for("old", date_done=now - datetime.timedelta(seconds=61)),
                   record_for("new", date_done=now), record_for("running", states.STARTED)])
    assert backend.cleanup() == 1
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {"new", "running"}


def test_cache_entries_expire_by_themselves(redis_available) -> None:
    with override_settings(CACHES=REDIS_CACHES):
        backend = CacheBackend(expires=1, cache_alias="results")
        task_id = "short-lived-" + str(uuid.uuid4())
        backend.store([record_for(task_id)])
        assert backend.get(task_id) is not None
        wait_until(lambda: backend.get(task_id) is None, timeout=5, what="cache expiry")


def test_cache_backend_chosen_by_settings(redis_available) -> None:
    with override_settings(**CACHE_SETTINGS, CELERY_TASK_RESULT_EXPIRES=90):
        backend = app.backend
        assert isinstance(backend, CacheBackend)
        assert (backend.cache_alias, backend.expires) == ("results", 90)
    assert isinstance(app.backend, DatabaseBackend)  # override_settings ended
    with override_settings(CELERY_RESULT_BACKEND="cache", CELERY_CACHE_BACKEND="absent"):
        with pytest.raises(ImproperlyConfigured, match="'absent' is not a key of CACHES"):
            app.backend  # noqa: B018 - building the backend is what fails


@pytest.mark.parametrize(("setting", "chosen"), [
    ("django-db", DatabaseBackend), ("redis://127.0.0.1:6379/4", RedisBackend),
    ("cache+memcached://127.0.0.1:11211;127.0.0.1:11212/", CacheBackend),
])
def test_backend_urls_as_celery_projects_write_them(setting: str, chosen: type) -> None:
    with override_settings(CELERY_RESULT_BACKEND=setting):
        backend = app.backend
    assert type(backend) is chosen
    if chosen is RedisBackend:
        assert backend.client.connection_pool.connection_kwargs["db"] == 4
    if chosen is CacheBackend:
        assert backend.servers == ["127.0.0.1:11211", "127.0.0.1:11212"]


@pytest.mark.parametrize("setting", ["rpc://", "amqp://guest@localhost//", "mongodb://x/"])
def test_broker_result_backends_are_refused_naming_the_choices(setting: str) -> None:
    with override_settings(CELERY_RESULT_BACKEND=setting):
        with pytest.raises(ImproperlyConfigured) as refused:
            app.backend  # noqa: B018
    for choice in ("'django-db'", "'redis://host:port/db'", "'cache+memcached://host:port/'"):
        assert choice in str(refused.value)
    assert ("djqueue's broker is the database" in str(refused.value)) == (
        not setting.startswith("mongodb"))


def test_cache_backend_with_a_real_worker(start_worker, redis_available) -> None:
    start_worker("-c", "1", settings=CACHE_SETTINGS)
    with override_settings(**CACHE_SETTINGS):
        ok, failed = add.delay(2, 2), fail.delay("in cache")
        assert ok.get(timeout=10) == 4
        with pytest.raises(Exception, match="in cache"):
            failed.get(timeout=10)
        assert failed.state == states.FAILURE
    assert not TaskResult.objects.exists()  # nothing went to the database backend


def run_worker(rounds: int = 4) -> None:
    worker = Worker(app, pool="solo", poll_interval=0)
    worker.start()
    for _ in range(rounds):
        worker.loop()


@pytest.mark.parametrize("spelling", ["CELERY_IGNORE_RESULT", "CELERY_TASK_IGNORE_RESULT"])
def test_ignore_result_setting(spelling: str, record_file) -> None:
    with override_settings(**{spelling: True}):
        ok, failed = record.delay("x"), fail.delay("no")
        run_worker()
    assert record_file.read_text().startswith("x ")
    assert not TaskResult.objects.exists()
    assert ok.state == failed.state == states.PENDING


def test_store_errors_even_if_ignored(record_file) -> None:
    with override_settings(CELERY_IGNORE_RESULT=True, CELERY_STORE_ERRORS_EVEN_IF_IGNORED=True):
        ok, failed = record.delay("x"), fail.delay("kept")
        run_worker()
    assert ok.state == states.PENDING
    assert failed.state == states.FAILURE


def old_and_new_results() -> None:
    now = timezone.now()
    DatabaseBackend().store([record_for("old", date_done=now - datetime.timedelta(hours=2)),
                             record_for("new", date_done=now)])


@pytest.mark.parametrize("spelling", ["CELERY_TASK_RESULT_EXPIRES", "CELERY_RESULT_EXPIRES"])
def test_cleanup_command(spelling: str) -> None:
    old_and_new_results()
    out = io.StringIO()
    with override_settings(**{spelling: datetime.timedelta(hours=1)}):
        call_command("celery", "cleanup", stdout=out)
    assert out.getvalue() == "Removed 1 expired result(s).\n"
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]
    out = io.StringIO()
    call_command("celery", "cleanup", stdout=out)  # default: one day
    assert out.getvalue() == "Removed 0 expired result(s).\n"


def test_running_workers_remove_expired_results(start_worker) -> None:
    old_and_new_results()
    start_worker("-c", "1", settings={"CELERY_TASK_RESULT_EXPIRES": 3600})
    # With results kept an hour a worker cleans every 6 minutes: too slow to wait for here.
    time.sleep(1)
    assert TaskResult.objects.count() == 2
    start_worker("-c", "1", settings={"CELERY_TASK_RESULT_EXPIRES": 30})  # cleans every 1.5-3 s
    wait_until(lambda: not TaskResult.objects.filter(task_id="old").exists(), timeout=15,
               what="the expired result to be removed")
    assert TaskResult.objects.filter(task_id="new").exists()
