"""Signatures, group and GroupResult, against the real database with the in-process worker."""

from __future__ import annotations

import gc

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import djqueue
from djqueue import states
from djqueue.client.base import app
from djqueue.canvas import Signature, group, signature
from djqueue.exceptions import TimeoutError
from djqueue.models import Message
from djqueue.result import EagerResult, GroupResult
from djqueue.worker.loop import Worker
from example_project.demo.tasks import DemoError, fail
from tasks import add

from .test_broker import statements, worker  # noqa: F401 - worker is a fixture

pytestmark = pytest.mark.django_db(transaction=True)


def run_all(worker: Worker) -> None:
    """Loop until nothing that is due is left (delayed messages stay)."""
    for _ in range(1000):
        worker.loop()
        if not Message.objects.filter(available_at__lte=timezone.now()).exists():
            return
    raise AssertionError("the worker did not drain the queue")


def test_public_names() -> None:
    assert djqueue.group is group and djqueue.signature is signature
    assert djqueue.Signature is Signature and djqueue.GroupResult is GroupResult
    assert djqueue.subtask is signature


def test_partial_and_immutable_signatures(worker: Worker) -> None:
    partial = add.s(2)
    assert partial == Signature("tasks.add", (2,))
    assert repr(partial) == "tasks.add(2)" and repr(add.si(1, y=2)) == "tasks.add(1, y=2)!"
    assert partial(3) == 5  # called here, like the function
    assert partial.clone((5,)).args == (5, 2) and partial.args == (2,)  # put first, as Celery
    assert add.si(1, 1).clone((9,), {"z": 1}).args == (1, 1)  # immutable ignores new arguments
    sent = partial.delay(40)
    ignored = add.si(1, 1).apply_async((100,))
    by_name = signature("tasks.add", (3,), {"y": 4}).delay()
    from_dict = signature({"task": "tasks.add", "args": [5, 5], "options": {"priority": 3}})
    assert from_dict.options == {"priority": 3}
    copied = signature(from_dict).set(countdown=1000)
    assert copied.options == {"priority": 3, "countdown": 1000} and from_dict.options == {"priority": 3}
    delayed = copied.delay()
    run_all(worker)
    assert (sent.get(timeout=1), ignored.get(timeout=1), by_name.get(timeout=1)) == (42, 2, 7)
    assert not delayed.ready() and Message.objects.get().available_at > Message.objects.get().created_at
    assert add.s(1, 1).apply().get() == 2


def test_group_is_one_write_and_its_results_come_back_in_order(worker: Worker) -> None:
    with CaptureQueriesContext(connection) as sent:
        result = group(add.s(i, i) for i in range(100)).apply_async()
    # PostgreSQL: COPY, then NOTIFY; SQLite: one executemany (logged as "100 times: INSERT …");
    # MySQL: one multi-row INSERT.
    expected = {"postgresql": ["COPY", "SELECT"], "mysql": ["INSERT"]}.get(connection.vendor,
                                                                            ["100"])
    assert [sql.split()[0] for sql in statements(sent)] == expected, statements(sent)
    assert Message.objects.count() == 100 and len(result) == 100
    assert not result.ready() and result.waiting() and result.completed_count() == 0
    with CaptureQueriesContext(connection) as asked:
        result.ready()
    assert len(statements(asked)) == 1  # one query for the whole group
    run_all(worker)
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 100
    assert result.get(timeout=1) == [i + i for i in range(100)]
    with CaptureQueriesContext(connection) as settled:
        assert result.join(timeout=1)[99] == 198
    assert statements(settled) == []  # finished results are remembered


def test_group_arguments_options_and_failures(worker: Worker) -> None:
    result = group(add.s(1), fail.si("boom"), add.s(2)).apply_async((10,), queue="celery", priority=7)
    assert set(Message.objects.values_list("priority", flat=True)) == {7}
    run_all(worker)
    assert result.ready() and result.failed() and not result.successful()
    assert result.completed_count() == 2
    with pytest.raises(DemoError, match="boom"):
        result.get(timeout=1)
    values = result.get(timeout=1, propagate=False)
    assert values[0] == 11 and isinstance(values[1], DemoError) and values[2] == 12
    assert result[1].state == states.FAILURE


def test_group_commits_or_rolls_back_with_the_caller() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        group(add.s(i, i) for i in range(10)).delay()
        raise RuntimeError("roll back")
    assert not Message.objects.exists()


def test_group_get_times_out() -> None:
    result = group(add.s(1, 1), add.s(2, 2))()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.05)


def test_eager_group_runs_here() -> None:
    app.conf.CELERY_ALWAYS_EAGER = True
    result = group([add.s(1, 2), add.s(3, 4)]).apply_async()
    assert all(isinstance(r, EagerResult) for r in result)
    assert result.ready() and result.get() == [3, 7]
    assert not Message.objects.exists()


def test_a_group_is_built_and_sent_without_cyclic_collections() -> None:
    """The group's own objects would set off whole-heap collections (see canvas._gc_paused):
    the collector is off while the calls are read and while their messages are built and sent,
    and is left as the caller had it."""
    seen: list[tuple[str, bool]] = []

    def calls():
        for i in range(3):
            seen.append(("read", gc.isenabled()))
            yield add.s(i, i)

    def route(name, args, kwargs):
        seen.append(("built", gc.isenabled()))
        return {"queue": "celery"}

    with override_settings(CELERY_ROUTES=[route]):
        group(calls()).apply_async()
        assert gc.isenabled()
        gc.disable()
        try:
            group(add.s(1, 1)).apply_async()
            assert not gc.isenabled()  # the caller's choice stays
        finally:
            gc.enable()
    assert seen == [("read", False)] * 3 + [("built", False)] * 4
    assert Message.objects.count() == 4
