"""How the prefork pool sizes what the worker claims for it, with real forked children.

The pool runs in a process of its own, as in a worker: forking the test process, which has
threads of its own by then, could deadlock a child.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from djqueue.worker.execution import Job, Outcome
from djqueue.worker.pools.prefork import MAX_CHILD_QUEUE, PreforkPool

ROOT = Path(__file__).resolve().parent.parent


def _job(number: int, task_name: str, *args: object) -> Job:
    body = json.dumps({"args": list(args), "kwargs": {}})
    return Job(number, f"job-{number}", task_name, "celery", 0, "application/json", body, 0,
               "test@host")


def _wait_for(pool: PreforkPool, count: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + 20
    while len(outcomes) < count and time.monotonic() < deadline:
        outcomes.extend(pool.wait(1.0))
    return outcomes


def test_jobs_a_batching_pool_holds_count_once_against_its_capacity(worker_env) -> None:
    """``spare()`` is what the pool can hold beyond one job per process, whatever it holds now:
    the worker subtracts the jobs the pool has from its capacity itself. Subtracting them in
    ``spare()`` as well kept the children's queues half empty, and a claim came only once they
    were nearly done."""
    code = "import django; django.setup(); from tests import test_prefork_pool as t; t.capacity()"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=worker_env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "capacity held"


def capacity() -> None:
    """The test's body, in the subprocess."""
    # A window wide enough that the first jobs, slow on a loaded machine (10 ms each gave a
    # child room for one job only, and no spare), still leave room for many.
    pool = PreforkPool(2, batch_window=1.0)
    pool.start()
    try:
        assert pool.spare() == 0  # nothing is known to be short yet
        plan = pool.plan()
        for number in (1, 2):
            assert plan.fits("tasks.add")
            plan.take(_job(number, "tasks.add", number, number))
        pool.submit(plan)
        assert [o.state for o in _wait_for(pool, 2)] == ["SUCCESS", "SUCCESS"]
        capacity = pool.spare()
        assert 0 < capacity <= 2 * (MAX_CHILD_QUEUE - 1)

        held = pool.plan()  # what a claim marked started: taken room or not
        held.force(_job(3, "example_project.demo.tasks.sleep", 0.5))
        held.force(_job(4, "example_project.demo.tasks.sleep", 0.5))
        for number in range(5, 25):
            held.force(_job(number, "tasks.add", number, 1))
        pool.submit(held)
        assert len(pool.running()) == 22
        assert pool.spare() == capacity

        outcomes = _wait_for(pool, 22)
        assert sorted(o.job.message_id for o in outcomes) == list(range(3, 25))
        assert {o.state for o in outcomes} == {"SUCCESS"}
    finally:
        pool.stop()
    assert not pool.running()
    print("capacity held")
