"""``manage.py celery control|inspect|status|purge|result|call``, against real workers."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from djqueue.models import ControlCommand, Message, Revocation
from example_project.demo.tasks import fail

from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def celery(*args: str) -> tuple[int, str, str]:
    """Run ``celery <args>`` in this process: ``(exit status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("celery", *args, stdout=out, stderr=err)
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


def test_control_and_inspect_print_each_reply(start_worker) -> None:
    start_worker("-c", "1", "-n", "alpha@test")
    assert celery("control", "rate_limit", "tasks.add", "10/m", "-t", "5") == (
        0, "Stored rate-limit override: tasks.add = 10/m; it lasts until 'celery control "
           "reset_rate_limit tasks.add'.\n-> alpha@test: OK\n    new rate limit set successfully\n",
        "")
    assert celery("control", "rate_limit", "tasks.add", "lots", "-t", "5") == (
        1, "-> alpha@test: ERROR\n    Invalid rate limit 'lots': expected N/s, N/m, N/h or a "
           "number (per second)\n", "")
    status, out, _ = celery("control", "add_consumer", "extra", "-d", "alpha@test", "-j", "-t", "5")
    assert (status, json.loads(out)) == (0, {"alpha@test": {"ok": "add consumer extra"}})
    assert celery("inspect", "ping", "-t", "5") == (0, "-> alpha@test: OK\n        pong\n", "")
    assert celery("inspect", "active", "-t", "5") == (0, "-> alpha@test: OK\n    - empty -\n", "")
    status, out, _ = celery("inspect", "active_queues", "-t", "5")
    lines = out.splitlines()
    assert lines[0] == "-> alpha@test: OK" and len(lines) == 3
    assert [json.loads(line.removeprefix("    * "))["name"] for line in lines[1:]] == [
        "celery", "extra"]
    status, out, _ = celery("inspect", "registered", "rate_limit", "-t", "5")
    assert status == 0 and "    * tasks.add [rate_limit=10/m]\n" in out
    status, out, _ = celery("inspect", "clock", "-t", "5")
    assert status == 0 and '"clock": ' in out
    status, out, _ = celery("inspect", "report", "-t", "5")
    assert status == 0 and "software -> djqueue:" in out and "loader   -> django" in out
    status, out, _ = celery("inspect", "stats", "-t", "5")
    assert status == 0 and '"max-concurrency": 1' in out
    assert celery("status", "-t", "5") == (0, "alpha@test: OK\n\n1 node online.\n", "")
    assert celery("control", "shutdown", "-t", "5")[1] == "-> alpha@test: OK\n    shutting down\n"


def test_no_reply_is_exit_status_69() -> None:
    for command in (("status",), ("inspect", "ping"), ("control", "pool_grow")):
        assert celery(*command, "-t", "0.2") == (
            69, "", "Error: No nodes replied within time constraint.\n")


def test_bad_input_is_a_clear_error() -> None:
    assert celery("control", "revoke", "some-id", "--terminate", "--signal", "SIGNOPE") == (
        64, "", "Error: Unknown signal 'SIGNOPE'\n")
    status, _, err = celery("control", "revoke", "i" * 256)
    assert (status, err) == (64, f"Error: The task id {'i' * 40!r}… is 256 characters long; at "
                                 "most 255 fit\n")
    from django.core.management.base import CommandError

    for limits in (["inf"], ["nan"], ["-1"], ["1e9999"], ["soon"], ["1", "1e10"]):
        with pytest.raises(CommandError, match="time limit must be"):
            celery("control", "time_limit", "tasks.add", *limits)
    assert celery("control", "time_limit", "tasks.add", "5", "2") == (
        64, "", "Error: the soft time limit (5s) must not be longer than the hard one (2s)\n")
    for queue in ("", "q" * 201):
        with pytest.raises(CommandError, match="queue name"):
            celery("control", "add_consumer", queue)
    assert not Revocation.objects.exists() and not ControlCommand.objects.exists()
    with pytest.raises(CommandError, match="invalid JSON list value"):
        celery("call", "tasks.add", "--args={}")
    assert not Message.objects.exists()


def test_call_and_result(start_worker) -> None:
    status, out, _ = celery("call", "tasks.add", "--args=[2, 2]", "--queue", "celery")
    task_id = out.strip()
    assert status == 0 and Message.objects.get().task_id == task_id
    assert celery("result", task_id) == (1, "", f"Task {task_id} is PENDING: no result yet.\n")
    start_worker("-c", "1")
    wait_until(lambda: celery("result", task_id)[0] == 0, what="the result")
    assert celery("result", task_id) == (0, "4\n", "")
    failed = fail.delay("kaput")
    wait_until(lambda: failed.ready(), what="the failure")
    status, out, _ = celery("result", failed.id)
    assert status == 1 and out.startswith("FAILURE: DemoError: kaput")
    status, out, _ = celery("result", failed.id, "--traceback")
    assert status == 0 and out.startswith("Traceback (most recent call last)") and "kaput" in out


def test_purge(monkeypatch: pytest.MonkeyPatch) -> None:
    for queue in ("celery", "celery", "low"):
        celery("call", "tasks.add", "--args=[1, 1]", "-Q", queue)
    celery("call", "tasks.add", "--args=[1, 1]", "-Q", "other")
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    status, out, _ = celery("purge", "-Q", "low")
    assert "deleted: low." in out and out.endswith("Nothing purged.\n")
    assert Message.objects.count() == 4
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    assert celery("purge", "-Q", "low")[1].endswith("Purged 1 message from 1 known task queue.\n")
    assert celery("purge", "-f") == (0, "Purged 3 messages from 2 known task queues.\n", "")
    assert celery("purge", "-f") == (0, "No messages purged from 1 queue.\n", "")
