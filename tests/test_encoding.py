"""Text no UTF-8 column can hold: lone surrogates in what a task leaves behind, and rows that are
not valid UTF-8 in SQLite's message table. Real workers on the real database, and the admin."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.test import Client, override_settings
from django.urls import reverse

from djqueue import states
from djqueue.cli.logs import configure_logging
from djqueue.exceptions import DecodeError
from djqueue.models import Message, TaskResult
from tests import fault_tasks as ft
from tasks import add

from .conftest import executions, wait_until
from .test_backends import CACHE_SETTINGS, redis_available  # noqa: F401 - a fixture


def url(name: str, *args: object) -> str:
    return reverse(f"admin:djqueue_{name}", args=args)


def test_a_lone_surrogate_in_a_task_outcome_is_stored_readable(
    start_worker, record_file, fault_report, admin_client: Client
) -> None:
    """The traceback, the exception's message and a returned string keep U+FFFD in the
    surrogate's place. PostgreSQL refused the round's result document (the worker exited with
    status 1); SQLite stored invalid UTF-8, which then failed every read of the result."""
    worker = start_worker("-c", "1")
    failed = ft.surrogate_in_error.delay("s1")
    odd = ft.surrogate_result.delay("s2")
    after = add.delay(2, 2)
    assert after.get(timeout=10) == 4
    wait_until(lambda: failed.state == states.FAILURE, what="FAILURE stored")
    error = failed.get(timeout=1, propagate=False)
    assert isinstance(error, ValueError) and str(error) == "bad \ufffd in s1"
    assert "ValueError: bad \ufffd in s1" in failed.traceback
    assert odd.get(timeout=10) == "odd \ufffd in s2"
    assert "ValueError: bad \ufffd in s1" in worker.log()  # logged as stored
    assert not Message.objects.exists()
    assert executions(record_file) == {"s1": 1, "s2": 1}
    assert worker.proc.poll() is None
    assert admin_client.get(url("taskresult_changelist")).status_code == 200
    page = admin_client.get(url("taskresult_change", TaskResult.objects.get(task_id=failed.id).pk))
    assert page.status_code == 200 and "ValueError: bad \ufffd in s1" in page.content.decode()
    fault_report("lone surrogate in an exception / a result", sent=3, executed=3, lost=0,
                 duplicated=0, outcome="stored with U+FFFD, worker kept")


def test_a_lone_surrogate_with_the_cache_backend(start_worker, redis_available) -> None:
    """The cache backend stores whatever the worker gives it (pickled): the text is made
    readable before it reaches any backend, so a result reads the same from either."""
    start_worker("-c", "1", settings=CACHE_SETTINGS)
    with override_settings(**CACHE_SETTINGS):
        failed = ft.surrogate_in_error.delay("c1")
        error = failed.get(timeout=10, propagate=False)
        assert isinstance(error, ValueError) and str(error) == "bad \ufffd in c1"
        assert "ValueError: bad \ufffd in c1" in failed.traceback
        assert ft.surrogate_result.delay("c2").get(timeout=10) == "odd \ufffd in c2"
    assert not TaskResult.objects.exists()


def _store_bytes(task_id: str, column: str, text: bytes) -> None:
    """Write bytes that are not valid UTF-8 into a text column, as only SQL from outside
    djqueue can (Python's drivers encode every str as valid UTF-8)."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE djqueue_message SET {column} = CAST(X'{text.hex()}' AS TEXT) "
                       "WHERE task_id = %s", [task_id])


def test_a_row_that_is_not_valid_utf8_is_set_aside(
    start_worker, record_file, fault_report, admin_client: Client
) -> None:
    """Such a row made every claim fail ("Could not decode to UTF-8 column 'body'"), which the
    worker retried as a database outage: no task ran again. Now it is set aside, shown with
    U+FFFD in place of the invalid bytes, and the queue goes on."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL cannot store text that is not valid UTF-8")
    worker = start_worker("-c", "1")
    assert add.delay(1, 1).get(timeout=10) == 2
    with transaction.atomic():  # the running worker sees the rows only once they are broken
        bad_body = ft.quick.delay("never")
        bad_name = ft.quick.delay("never either")
        behind = [ft.quick.delay(f"behind-{i}") for i in range(3)]
        _store_bytes(bad_body.id, "body", b'{"args":["bad\xff"],"kwargs":{}}')
        _store_bytes(bad_name.id, "task_name", b"tests.fault_tasks.quick\xff")
    assert [r.get(timeout=10) for r in behind] == [f"behind-{i}" for i in range(3)]
    for result, column in ((bad_body, "body"), (bad_name, "task_name")):
        wait_until(lambda: result.state == states.FAILURE, what=f"{column}: FAILURE")
        error = result.get(timeout=1, propagate=False)
        assert isinstance(error, DecodeError) and f"{column} is not valid UTF-8" in str(error)
        message = Message.objects.get(task_id=result.id)
        assert message.state == "rejected" and f"{column} is not valid UTF-8" in message.error
        assert "U+FFFD" in message.error
        page = admin_client.get(url("message_change", message.pk))
        assert page.status_code == 200 and "is not valid UTF-8" in page.content.decode()
    assert Message.objects.get(task_id=bad_body.id).body == '{"args":["bad\ufffd"],"kwargs":{}}'
    assert Message.objects.get(task_id=bad_name.id).task_name == "tests.fault_tasks.quick\ufffd"
    assert admin_client.get(url("message_changelist")).status_code == 200
    assert admin_client.get(url("message_changelist") + "?status=rejected").status_code == 200
    assert executions(record_file) == {f"behind-{i}": 1 for i in range(3)}
    assert "Could not decode" not in worker.log()
    assert worker.proc.poll() is None
    fault_report("message row not valid UTF-8 (SQLite)", sent=6, executed=4, lost=0,
                 duplicated=0, outcome="FAILURE DecodeError, message kept as rejected")


def test_a_log_file_keeps_a_line_with_a_lone_surrogate(tmp_path: Path) -> None:
    """A task's own log line may carry one (a file name): ``--logfile`` writes it escaped, as
    stderr does, instead of dropping the line with '--- Logging error ---'."""
    root, task_logger = logging.getLogger(), logging.getLogger("djqueue.task")
    handlers, level = list(root.handlers) + list(task_logger.handlers), root.level
    configure_logging("INFO", str(tmp_path / "worker.log"))
    try:
        logging.getLogger("djqueue.worker").error("cannot open \udcff.txt")
    finally:
        for logger in (root, task_logger):
            for handler in set(logger.handlers) - set(handlers):
                logger.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        task_logger.propagate = True
    assert "cannot open \\udcff.txt" in (tmp_path / "worker.log").read_text()
