"""Text no UTF-8 column can hold: lone surrogates in what a task leaves behind. Real workers on
the real database, and the admin."""

from __future__ import annotations

import logging
from pathlib import Path

from django.test import Client, override_settings
from django.urls import reverse

from djqueue import states
from djqueue.cli.logs import configure_logging
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


def test_a_log_file_keeps_a_line_with_a_lone_surrogate(tmp_path: Path) -> None:
    """A task's own log line may carry one (a file name): ``--logfile`` writes it escaped, as
    stderr does, instead of dropping the line with '--- Logging error ---'."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("INFO", str(tmp_path / "worker.log"))
    try:
        logging.getLogger("djqueue.worker").error("cannot open \udcff.txt")
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    assert "cannot open \\udcff.txt" in (tmp_path / "worker.log").read_text()
