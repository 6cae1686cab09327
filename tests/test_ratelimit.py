"""Rate limits: the grammar, the token bucket, and a worker that keeps waiting messages in the
table while other tasks run."""

from __future__ import annotations

import datetime
import time

import pytest
from django.test import override_settings
from django.utils import timezone

from djqueue import states
from djqueue.client.base import app
from djqueue.exceptions import ImproperlyConfigured
from djqueue.models import Message
from djqueue.client.rates import parse_rate
from djqueue.worker.throttle import RateLimiter, TokenBucket
from djqueue.worker.loop import Worker
from example_project.demo.tasks import record
from tasks import add

from .conftest import wait_until


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("10/s", 10), ("30/m", 0.5), ("360/h", 0.1), ("2", 2), (2.5, 2.5), ("1.5/s", 1.5),
     (" 6 / m ", 0.1), (None, 0), (0, 0), ("0", 0), ("", 0)],
)
def test_rate_grammar(text: object, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["ten/m", "10/d", "10/", "/m", "-1", -1, True, "1/s/m"])
def test_bad_rates_are_refused_clearly(text: object) -> None:
    with pytest.raises(ImproperlyConfigured):
        parse_rate(text)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_spaces_tasks_evenly() -> None:
    clock = Clock()
    bucket = TokenBucket(0.5, clock=clock)  # "30/m"
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(2.0)
    clock.now += 1.5
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 60  # idle time does not store up a burst beyond the capacity of one
    assert bucket.take() == 0.0
    assert bucket.take() > 0


def test_limiter_keeps_one_bucket_per_task_name() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.wait_time("a", "1/m") == 0.0
    assert limiter.wait_time("a", "1/m") == pytest.approx(60)
    assert limiter.wait_time("b", "1/m") == 0.0  # another task is not held back
    assert limiter.wait_time("a", "2/m") == 0.0  # a changed limit starts afresh
    assert limiter.wait_time("a", None) == 0.0 and limiter.wait_time("a", None) == 0.0


def run_rounds(worker: Worker, rounds: int = 4) -> None:
    for _ in range(rounds):
        worker.loop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("settings_", [
    {"CELERY_ANNOTATIONS": {"example_project.demo.tasks.record": {"rate_limit": "1/m"}}},
    {"CELERY_DEFAULT_RATE_LIMIT": "1/m"},
    {"CELERY_TASK_DEFAULT_RATE_LIMIT": "1/m"},
])
def test_over_the_limit_waits_in_the_table_and_others_run(settings_, record_file) -> None:
    with override_settings(**settings_):
        worker = Worker(app, pool="solo", poll_interval=0)
        worker.start()
        first, second = record.delay("first"), record.delay("second")
        other = add.delay(1, 2)
        run_rounds(worker)
    assert first.successful() and other.get(timeout=1) == 3
    assert second.state == states.PENDING
    waiting = Message.objects.get(task_id=second.id)
    assert (waiting.state, waiting.worker) == ("ready", "")  # back in the table, for anyone
    assert waiting.available_at > timezone.now() + datetime.timedelta(seconds=50)
    assert record_file.read_text().split()[::2] == ["first"]


@pytest.mark.django_db(transaction=True)
def test_disable_rate_limits(record_file) -> None:
    with override_settings(CELERY_DEFAULT_RATE_LIMIT="1/m", CELERY_DISABLE_RATE_LIMITS=True):
        worker = Worker(app, pool="solo", poll_interval=0)
        worker.start()
        results = [record.delay(i) for i in range(3)]
        run_rounds(worker)
    assert all(r.successful() for r in results)


@pytest.mark.django_db(transaction=True)
def test_worker_refuses_to_start_with_a_bad_limit() -> None:
    with override_settings(CELERY_ANNOTATIONS={"tasks.add": {"rate_limit": "lots"}}):
        with pytest.raises(ImproperlyConfigured, match="'tasks.add'.*'lots'"):
            Worker(app, pool="solo").start()


def test_thirty_a_minute_end_to_end(start_worker) -> None:
    """5 tasks at '30/m' take about 8 s on one worker; a task without a limit runs at once."""
    start_worker("-c", "1", settings={
        "CELERY_ANNOTATIONS": {"example_project.demo.tasks.record": {"rate_limit": "30/m"}},
    })
    began = time.monotonic()
    limited = [record.delay(i) for i in range(5)]
    time.sleep(0.5)
    free = add.delay(2, 3)
    assert free.get(timeout=5) == 5
    assert time.monotonic() - began < 4.5  # not queued behind the four waiting tasks
    # The waiting messages are rows that any worker could take, not held by this worker.
    wait_until(lambda: Message.objects.filter(state="ready", task_name=record.name).count() >= 3,
               timeout=5, what="rate-limited messages back in the table")
    for result in limited:
        result.get(timeout=30)
    elapsed = time.monotonic() - began
    assert 7.5 <= elapsed < 30, elapsed
