"""Remote-control input the workers must refuse, against real worker processes: each bad argument
gets an error reply and changes nothing, and no command or row stops a worker."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from djqueue import states
from djqueue.client.base import app
from djqueue.worker.control_arguments import MAX_POOL
from djqueue.exceptions import TimeLimitExceeded
from djqueue.models import ControlCommand, ControlReply, RateLimitOverride, Revocation, WorkerNode
from example_project.demo.tasks import sleep
from tasks import add

from .conftest import WorkerProcess, wait_until

TIMEOUT = 5.0
NODE = "alpha@test"
#: PostgreSQL's jsonb cannot hold a NUL character, so there the sender's INSERT fails and no such
#: command reaches a worker; SQLite stores it.
NUL = ["a\x00b"] if connection.vendor == "sqlite" else []


def answer(command: str, **arguments: Any) -> Any:
    """The worker's reply to ``command``."""
    [reply] = app.control.broadcast(command, arguments, destination=NODE, reply=True,
                                    timeout=TIMEOUT)
    return reply[NODE]


def refused(command: str, **arguments: Any) -> str:
    reply = answer(command, **arguments)
    assert isinstance(reply, dict) and set(reply) == {"error"}, (command, arguments, reply)
    return reply["error"]


def stats() -> dict[str, Any]:
    return app.control.inspect(NODE, TIMEOUT).stats()[NODE]


def still_working(worker: WorkerProcess) -> None:
    """The worker process is alive, answers and runs tasks."""
    assert add.delay(2, 2).get(timeout=10) == 4
    assert answer("ping") == {"ok": "pong"}
    assert worker.proc.poll() is None


def test_bad_pool_sizes_are_refused(start_worker) -> None:
    worker = start_worker("-c", "2", "-n", NODE)
    for command, n in [("pool_grow", -5), ("pool_grow", 0), ("pool_grow", 1.5),
                       ("pool_grow", "two"), ("pool_grow", True), ("pool_grow", None),
                       ("pool_shrink", -5), ("pool_shrink", 2), ("pool_shrink", [1]),
                       ("pool_grow", MAX_POOL)]:
        refused(command, n=n)
        assert stats()["pool"]["max-concurrency"] == 2, (command, n)
    assert WorkerNode.objects.get().concurrency == 2
    still_working(worker)


def test_bad_time_limits_are_refused(start_worker) -> None:
    worker = start_worker("-c", "1", "-n", NODE)
    name = "example_project.demo.tasks.sleep"
    assert answer("time_limit", task_name=name, hard=1) == {"ok": "time limits set successfully"}
    for limits in [{"soft": "1e9999"}, {"soft": "inf"}, {"hard": "nan"}, {"soft": -1},
                   {"hard": 10**12}, {"soft": 5, "hard": 2}, {"soft": True}, {"hard": [1]},
                   {"soft": "soon"}]:
        refused("time_limit", task_name=name, **limits)
    for task_name in ["no.such.task", 5, None]:
        refused("time_limit", task_name=task_name, soft=1)
    # The limit set first still holds, and other tasks run.
    with pytest.raises(TimeLimitExceeded):
        sleep.delay(5).get(timeout=15)
    still_working(worker)


def test_bad_rate_limits_are_refused_and_not_stored(start_worker) -> None:
    worker = start_worker("-c", "1", "-n", NODE)
    for rate in ["9" * 400, "0." + "0" * 60 + "1/s", "often", -1, [1]]:  # infinite, too long, …
        [reply] = app.control.rate_limit("tasks.add", rate, destination=NODE, reply=True,
                                         timeout=TIMEOUT)
        assert set(reply[NODE]) == {"error"}, (rate, reply)
    refused("rate_limit", task_name=["tasks.add"], rate_limit="1/s")
    assert not RateLimitOverride.objects.exists()
    assert stats()["rate_limits"] == {}
    still_working(worker)


def test_bad_queue_names_are_refused(start_worker) -> None:
    worker = start_worker("-c", "1", "-n", NODE)
    for queue in [*NUL, "q" * 201, "", 5, None, ["celery"]]:
        refused("add_consumer", queue=queue)
        refused("cancel_consumer", queue=queue)
    assert stats()["queues"] == ["celery"]
    assert WorkerNode.objects.get().queues == "celery"
    still_working(worker)


def test_bad_task_ids_and_flags_are_refused(start_worker) -> None:
    worker = start_worker("-c", "1", "-n", NODE)
    for ids in [*NUL, "i" * 256, [""], [1], [["a"]], None]:
        refused("revoke", task_ids=ids)
    for ids in [5, [["a"]], None]:
        refused("query_task", ids=ids)
    for flag in ["yes", 1, None]:
        refused("conf", with_defaults=flag)
    assert not Revocation.objects.exists()
    still_working(worker)


def test_a_revocation_with_an_unknown_signal_terminates_with_sigterm(start_worker) -> None:
    """``revoke()`` refuses an unknown signal, but a row may come from elsewhere: the worker stops
    the task with SIGTERM and says so, and keeps working."""
    worker = start_worker("-c", "1", "-n", NODE)
    running = sleep.delay(30)
    inspect = app.control.inspect(NODE, TIMEOUT)
    wait_until(lambda: [t["id"] for t in (inspect.active() or {}).get(NODE, [])] == [running.id],
               what="the task running")
    Revocation.objects.create(task_id=running.id, terminate=True, signal="SIGFOO")
    wait_until(lambda: running.state == states.REVOKED, what="the task terminated")
    assert "Unknown signal 'SIGFOO' in a revocation; sending SIGTERM instead." in worker.log()
    assert "signal 15 (SIGTERM)" in running.result.args[0]
    still_working(worker)


def test_bad_command_rows_do_not_stop_a_worker(start_worker) -> None:
    worker = start_worker("-c", "1", "-n", NODE)
    soon = timezone.now() + datetime.timedelta(seconds=30)
    nowhere = ControlCommand.objects.create(name="ping", destination=5, reply=True,
                                            expires_at=soon)
    text = ControlCommand.objects.create(name="ping", arguments="text", reply=True,
                                         expires_at=soon)
    wait_until(lambda: ControlReply.objects.filter(command_id=text.pk).exists(), what="a reply")
    assert ControlReply.objects.get(command_id=text.pk).data["error"].startswith(
        "bad arguments for ping")
    still_working(worker)
    assert not ControlReply.objects.filter(command_id=nowhere.pk).exists()
    assert "which names no worker; ignored." in worker.log()


def test_a_reply_the_table_cannot_hold_is_an_error_reply(start_worker) -> None:
    """A setting with a NUL character: PostgreSQL's jsonb cannot hold ``inspect conf``'s reply.
    The worker replies with an error instead, logs why, and carries on."""
    worker = start_worker("-c", "1", "-n", NODE, settings={"CELERY_CACHE_BACKEND": "ca\x00che"})
    reply = answer("conf")
    if connection.vendor == "postgresql":
        assert reply == {"error": "the reply could not be stored (DataError): see the worker's log"}
        assert "The reply to control command" in worker.log()
    else:
        assert reply["CELERY_CACHE_BACKEND"] == "ca\x00che"
    still_working(worker)
