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
    hosts = set(TaskResult.objects.values_list("worker", flat=True))
    assert len(hosts) == 3, f"not every worker took part: {hosts}"
    for worker in workers:
        assert "Traceback" not in worker.log()
