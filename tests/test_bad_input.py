"""Input at the edges of what the tables hold, on every database: 4-byte UTF-8 in every text a
task leaves, identifiers that differ only in case, and (MySQL, whose statements are limited by
the server's ``max_allowed_packet``) messages and results too large for one statement. In-process
worker (solo pool), real database."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from djqueue import group, states
from djqueue.broker import operations
from djqueue.client.base import app
from djqueue.exceptions import EncodeError, MessageTooLarge
from djqueue.models import Message, TaskResult
from djqueue.worker.loop import Worker
from example_project.demo.tasks import fail
from tasks import add
from tests import fault_tasks as ft

pytestmark = pytest.mark.django_db(transaction=True)

EMOJI = "\U0001f600 \U00010348"  # outside the Basic Multilingual Plane: 4 bytes in UTF-8


def loops(queues: list[str] | None = None, rounds: int = 4) -> Worker:
    worker = Worker(app, pool="solo", poll_interval=0, hostname="bad@input", queues=queues)
    worker.start()
    for _ in range(rounds):
        worker.loop()
    return worker


def test_four_byte_utf8_in_ids_names_arguments_results_and_tracebacks() -> None:
    queue = f"q{EMOJI}"
    ok = add.apply_async((EMOJI, "!"), task_id=f"id{EMOJI}", queue=queue)
    failed = fail.apply_async((f"boom {EMOJI}",), queue=queue)
    loops([queue])
    assert ok.get(timeout=1) == f"{EMOJI}!"
    row = TaskResult.objects.get(task_id=f"id{EMOJI}")
    assert (row.queue, row.args) == (queue, repr([EMOJI, "!"]))
    assert failed.state == states.FAILURE and f"boom {EMOJI}" in failed.traceback
    assert not Message.objects.exists()


def test_ids_and_queues_that_differ_only_in_case_are_different() -> None:
    """Identifiers compare byte by byte on every database (MySQL: utf8mb4_bin, migration 0008):
    a worker of queue ``low`` does not take ``LOW``'s messages, and two task ids that differ in
    case are two results."""
    upper = add.apply_async((1, 1), task_id="Case-Id", queue="LOW")
    lower = add.apply_async((2, 2), task_id="case-id", queue="low")
    loops(["low"])
    assert lower.get(timeout=1) == 4 and not upper.ready()
    assert list(Message.objects.values_list("task_id", flat=True)) == ["Case-Id"]
    loops(["LOW"])
    assert upper.get(timeout=1) == 2
    assert TaskResult.objects.count() == 2


def packet_size() -> int:
    if connection.vendor != "mysql":
        pytest.skip("PostgreSQL's and SQLite's text columns take up to 1 GB in one statement")
    return operations()._packet_size()


def test_a_message_too_large_for_one_statement_is_refused_and_nothing_is_written() -> None:
    """MySQL drops the connection on a statement over ``max_allowed_packet``; djqueue refuses
    the message before sending it, alone or in a group, inside the caller's transaction too."""
    big = "x" * packet_size()
    with pytest.raises(MessageTooLarge, match="max_allowed_packet"):
        add.delay(big, "")
    with pytest.raises(MessageTooLarge):
        group(add.s(1, 1), add.s(big, ""), add.s(2, 2)).apply_async()
    with transaction.atomic():
        kept = add.delay(3, 3)
        with pytest.raises(MessageTooLarge), transaction.atomic():
            group(add.s(i, i) for i in range(600)).apply_async()  # a first chunk is sent
            add.delay(big, "")
    assert list(Message.objects.values_list("task_id", flat=True)) == [kept.id]


def test_a_result_too_large_for_one_statement_fails_its_task_only() -> None:
    """The round's results are refused as a whole (``DataError``), then stored one at a time:
    the task whose result alone is too large fails with ``EncodeError``, the others succeed, and
    the worker goes on."""
    size = packet_size()
    huge = ft.repeat.delay("y", size)
    small = [add.delay(i, i) for i in range(3)]
    worker = loops(rounds=8)
    assert [r.get(timeout=1) for r in small] == [0, 2, 4]
    assert huge.state == states.FAILURE
    with pytest.raises(EncodeError):
        huge.get(timeout=1)
    after = add.delay(5, 5)
    worker.loop()
    worker.loop()
    assert after.get(timeout=1) == 10 and not Message.objects.exists()
