"""Several workers draining one queue: every task runs exactly once."""

from __future__ import annotations

import collections

from django.db import transaction

from djqueue import states
from djqueue.models import Message, TaskResult
from example_project.demo.tasks import record

from .conftest import wait_until

TASKS = 3000


def test_three_workers_run_each_task_exactly_once(start_worker, record_file) -> None:
    workers = [start_worker("-c", "2", "-n", f"w{n}@%h") for n in range(3)]
    with transaction.atomic():  # all become visible at once, to workers already polling
        for i in range(TASKS):
            record.delay(i)
    wait_until(
        lambda: TaskResult.objects.filter(state=states.SUCCESS).count() == TASKS,
        timeout=120, what=f"{TASKS} results",
    )
    lines = record_file.read_text().splitlines()
    runs = collections.Counter(int(line.split()[0]) for line in lines)
    assert len(lines) == TASKS, f"{len(lines) - TASKS} extra executions"
    assert set(runs) == set(range(TASKS)) and set(runs.values()) == {1}
    assert not Message.objects.exists()
    # The workers competed for the rows. Not necessarily all three: a worker that has learned the
    # task is short claims up to worker.MAX_CLAIM at once (what its children run within the
    # batch window), and on SQLite, where workers poll every 50 ms here, two of them can claim
    # all 3,000 before the third looks (seen in CI on a fast machine).
    hosts = set(TaskResult.objects.values_list("worker", flat=True))
    assert len(hosts) >= 2, f"one worker ran everything, nothing was contended: {hosts}"
    for worker in workers:
        assert "Traceback" not in worker.log()
