"""The task life cycle in a real ``manage.py celery worker`` (prefork, two children): the
handlers run in the pool process in Celery's order, a polling client sees ``update_state``'s
PROGRESS while the task runs, ``Reject`` with and without requeue, ``Ignore``, custom headers,
``shadow`` in the worker's log lines, ``ignore_result`` per call. One worker serves every check.
In-process details: tests/test_task_hooks.py."""

from __future__ import annotations

import os
from pathlib import Path

from djqueue import states
from djqueue.exceptions import Reject
from djqueue.models import Message
from djqueue.result import AsyncResult

from .conftest import wait_until
from .hook_tasks import hooked, progress, rejecting, request_fields
from .test_task_hooks import events

TIMEOUT = 60


def test_life_cycle_in_a_worker(start_worker, record_file: Path, tmp_path: Path,
                                worker_env: dict[str, str]) -> None:
    worker = start_worker("-c", "2", env={
        "DJQUEUE_EXTRA_IMPORTS": f"{worker_env['DJQUEUE_EXTRA_IMPORTS']},tests.hook_tasks"})
    gate = tmp_path / "gate"
    running = progress.delay(str(gate))
    # While the call runs (it waits for the gate), a client polling its result sees PROGRESS.
    wait_until(lambda: running.info == {"current": 3, "total": 3}, TIMEOUT, "the last step")
    assert running.state == "PROGRESS" and not running.ready()  # still waiting for the gate

    ok, failed, retried = hooked.delay("ok"), hooked.delay("fail"), hooked.delay("retry")
    requeued, dead = rejecting.delay(True), rejecting.delay(False)
    ignored = hooked.delay("ignore")
    fields = request_fields.apply_async((1,), headers={"tenant": "t1"}, shadow="nickname")
    dropped = hooked.apply_async(("ok",), ignore_result=True)

    assert ok.get(timeout=TIMEOUT) == "ok"
    assert retried.get(timeout=TIMEOUT) == "retry"
    assert requeued.get(timeout=TIMEOUT) == "second time"
    assert isinstance(failed.get(timeout=TIMEOUT, propagate=False), ValueError)
    assert isinstance(dead.get(timeout=TIMEOUT, propagate=False), Reject)
    seen = fields.get(timeout=TIMEOUT)
    gate.touch()
    assert running.get(timeout=TIMEOUT) == "finished"
    wait_until(lambda: "on_success" in " ".join(events(record_file, dropped.id)), TIMEOUT,
               "the ignore_result call")
    wait_until(lambda: ignored.state == "CUSTOM", TIMEOUT, "the ignored call")

    # Handlers ran in the pool process, in Celery's order.
    assert events(record_file, ok.id) == [
        "before_start ['ok']", "run retries=0", "on_success 'ok'", "after_return SUCCESS 'ok' None"]
    assert events(record_file, failed.id) == [
        "before_start ['fail']", "run retries=0",
        f"on_failure ValueError traced=True id={failed.id}",
        "after_return FAILURE ValueError('failed on purpose') None"]
    assert events(record_file, retried.id) == [
        "before_start ['retry']", "run retries=0", "on_retry KeyError('again') Retry",
        "before_start ['retry']", "run retries=1", "on_success 'retry'",
        "after_return SUCCESS 'retry' None"]
    # Reject(requeue=True) with acks_late: back to the queue, run again (a redelivery).
    assert events(record_file, requeued.id) == [
        "before_start [True]", "run redelivered=False",
        "before_start [True]", "run redelivered=True", "on_success 'second time'",
        "after_return SUCCESS 'second time' None"]
    # Reject without requeue: FAILURE, the message set aside; no handler after the body.
    assert events(record_file, dead.id) == ["before_start [False]", "run redelivered=False"]
    assert Message.objects.get(task_id=dead.id).state == Message.State.REJECTED
    # Ignore: acknowledged, nothing stored but what update_state() stored, no handler.
    assert ignored.info == {"why": "ignored on purpose"}
    assert events(record_file, ignored.id) == ["before_start ['ignore']", "run retries=0"]
    # ignore_result per call: the handlers ran, no state stored.
    assert AsyncResult(dropped.id).state == states.PENDING
    # The request, read from the message.
    assert seen["headers"] == {"tenant": "t1"} and seen["custom"] == "t1"
    assert seen["shadow"] == "nickname" and seen["is_eager"] is False
    assert seen["correlation_id"] == fields.id and seen["parent_id"] is None

    wait_until(lambda: not Message.objects.exclude(state=Message.State.REJECTED).exists(),
               TIMEOUT, "every message settled")
    log = worker.log()
    assert f"Task nickname[{fields.id}] succeeded in" in log
    assert f"Task tests.hook_tasks.rejecting[{dead.id}] reject requeue=False: not now" in log
    assert f"Task tests.hook_tasks.rejecting[{requeued.id}] reject requeue=True: not now" in log
    assert f"Task tests.hook_tasks.hooked[{ignored.id}] ignored" in log
    assert "INTERNAL ERROR" not in log and os.path.exists(gate)
