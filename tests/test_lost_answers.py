"""A claim that committed while its answer was lost (the connection cut after the commit): the
worker never learns it holds those rows. Its heartbeat extends only the leases of what it knows
it holds, so such a row runs out its lease and is recovered like a dead worker's.

A real worker reaches the database through a proxy (:mod:`tests.answer_proxy`) that forwards the
claim, lets it commit, and drops the commit's answer and the connection; executions are counted
from what the tasks write (``record_file``).
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from djqueue import states
from djqueue.models import Message, TaskResult
from tests import fault_tasks as ft

from .conftest import executions, wait_until
from .answer_proxy import answer_dropper

LEASE = "2"  # DJQUEUE_WORKER_LOST_TIMEOUT: the worker beats every third of a second
#: Lease, recovery and the next claim take seconds; a row kept for ever never ends.
WAIT = 60


@pytest.fixture
def proxy():
    if connection.vendor not in ("postgresql", "mysql"):
        pytest.skip("a claim and its answer are one call in the worker's process on SQLite, "
                    "never cut apart")
    settings = connection.settings_dict
    default = 5432 if connection.vendor == "postgresql" else 3306
    upstream = (settings["HOST"] or "127.0.0.1", int(settings["PORT"] or default))
    with answer_dropper(connection.vendor, upstream) as dropper:
        yield dropper


def through(proxy) -> dict[str, str]:
    settings = connection.settings_dict
    scheme = "postgres" if connection.vendor == "postgresql" else "mysql"
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    return {"DATABASE_URL": f"{scheme}://{settings['USER']}{password}@{proxy.host}:{proxy.port}/"
                            f"{settings['NAME']}",
            "DJQUEUE_WORKER_LOST_TIMEOUT": LEASE}


def final(task_id: str) -> tuple[str, str] | None:
    row = TaskResult.objects.filter(task_id=task_id, state__in=states.READY_STATES).values_list(
        "state", "result").first()
    return None if row is None else (row[0], row[1] or "")


@pytest.mark.parametrize(("task", "warm"), [(ft.nap, False), (ft.nap_late, True)],
                         ids=["reserved by the claim", "started by the claim, acks_late"])
def test_a_claim_whose_answer_was_lost_runs_once(start_worker, record_file, proxy, fault_report,
                                                 task, warm: bool) -> None:
    """The lost claim reserved the row (a task the worker has not run yet) or started it (one it
    has run: the claim starts it at once, and with acks_late recovery hands it back). Before,
    the heartbeat extended every row of its owner, and the row stayed with its live worker for
    ever, never run."""
    worker = start_worker("-c", "1", env=through(proxy))
    if warm:  # the worker learns the task, so its claim starts the next one at once
        assert task.delay("warm", 0).get(timeout=30) == "warm"
    task_id = str(uuid.uuid4())
    proxy.arm(task_id)
    task.apply_async(("lost", 0), task_id=task_id)
    wait_until(proxy.dropped.is_set, timeout=30, what="the claim's answer dropped")
    wait_until(lambda: final(task_id) is not None, timeout=WAIT, what="the task's end")
    end = final(task_id)
    runs = executions(record_file)["lost"]
    left = list(Message.objects.filter(task_id=task_id).values_list("state", flat=True))
    alive = worker.proc.poll() is None
    fault_report(f"claim's answer lost after its commit ({'started' if warm else 'reserved'})",
                 sent=1, executed=runs, lost=int(end is None), duplicated=max(0, runs - 1),
                 outcome=end[0] if end else "no end")
    assert (end and end[0], runs, left, alive) == (states.SUCCESS, 1, [], True), worker.log()


def test_a_started_task_whose_claim_answer_was_lost_is_lost_once(
        start_worker, record_file, proxy, fault_report) -> None:
    """Without acks_late, a message the claim started is at most once: the worker that never
    learned of it is taken for lost on it (WorkerLostError) and it is not run; it is not kept."""
    worker = start_worker("-c", "1", env=through(proxy))
    assert ft.nap.delay("warm", 0).get(timeout=30) == "warm"
    task_id = str(uuid.uuid4())
    proxy.arm(task_id)
    ft.nap.apply_async(("lost", 0), task_id=task_id)
    wait_until(proxy.dropped.is_set, timeout=30, what="the claim's answer dropped")
    wait_until(lambda: final(task_id) is not None, timeout=WAIT, what="the task's end")
    state, result = final(task_id)
    runs = executions(record_file)["lost"]
    fault_report("claim's answer lost after its commit (started, no acks_late)", sent=1,
                 executed=runs, lost=0, duplicated=0, outcome=f"{state} WorkerLostError")
    assert (state, "WorkerLostError" in result, runs) == (states.FAILURE, True, 0), worker.log()
    assert ft.nap.delay("after", 0).get(timeout=30) == "after"  # the worker goes on
