"""Flow control with several real workers and producers (``manage.py`` subprocesses): a
concurrency limit per key and a cluster-wide rate across workers, producers racing for unique
keys, a paused queue and a rate-limit override across a worker's restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from djqueue.models import Message, UniqueTask
from tasks import add

from .conftest import ROOT, wait_until
from .flow_tasks import held, paced
from .test_cli_remote import celery

pytestmark = pytest.mark.django_db(transaction=True)
FLOW_IMPORTS = {"DJQUEUE_EXTRA_IMPORTS": "tests.fault_tasks,tests.flow_tasks"}


def _records(path: Path) -> list[tuple[str, str, float]]:
    return [(key, event, float(when)) for key, event, when, _ in
            (line.split() for line in path.read_text().splitlines())]


def test_limits_hold_across_several_workers(start_worker, record_file) -> None:
    for n in range(2):
        start_worker("-P", "threads", "-c", "4", "-n", f"w{n}@test", env=FLOW_IMPORTS)
    sent = [held.apply_async((key, 0.2), concurrency_key=key) for key in ("a", "b") for _ in range(5)]
    sent += [paced.delay("paced") for _ in range(8)]
    wait_until(lambda: all(r.ready() for r in sent), timeout=60, what="every task done")
    records = _records(record_file)
    for key in ("a", "b"):  # never more than two running at once
        running = peak = 0
        for _, event, _ in sorted((r for r in records if r[0] == key), key=lambda r: r[2]):
            running += 1 if event == "start" else -1
            peak = max(peak, running)
        assert peak <= 2, f"{peak} of key {key} ran at once"
    starts = sorted(when for key, _, when in records if key == "paced")
    assert len(starts) == 8
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # 5/s for the two workers together (each on its own would start two at once). SQLite
    # stamps a start on the worker's clock a moment after its admission: some slack.
    assert min(gaps) > 0.1, gaps


def test_racing_producers_enqueue_one_message_per_key(worker_env) -> None:
    code = ("import django; django.setup()\n"
            "from tasks import add\n"
            "for i in range(40): add.apply_async((i % 10, 0), unique_key=f'k{i % 10}')\n")
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "example_project.settings"}
    producers = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
                 for _ in range(3)]
    try:
        assert [p.wait(60) for p in producers] == [0] * 3
    finally:
        for producer in producers:
            if producer.poll() is None:
                producer.kill()
                producer.wait()
    assert Message.objects.count() == 10
    assert UniqueTask.objects.count() == 10


def test_pauses_and_overrides_survive_a_restart_and_can_be_undone(start_worker) -> None:
    worker = start_worker("-P", "threads", "-n", "alpha@test")
    status, out, _ = celery("control", "pause_queue", "celery", "-t", "5")
    assert status == 0 and "-> alpha@test: OK\n    queue celery paused" in out
    status, out, _ = celery("control", "rate_limit", "tasks.add", "0", "-t", "5")
    assert status == 0 and "rate limit disabled successfully" in out
    waiting = add.delay(1, 2)
    celery("control", "shutdown", "-t", "5")
    assert worker.wait(15) == 0
    assert Message.objects.get(task_id=waiting.id).state == "ready"
    worker = start_worker("-P", "threads", "-n", "alpha@test")
    log = worker.wait_for("Paused queues (not claimed from): celery.")
    assert "Rate limit of tasks.add set at run time: none (configured: none)" in log
    status, out, _ = celery("control", "reset_rate_limit", "tasks.add", "-t", "5")
    assert "rate limit back to the configured one (none)" in out
    assert Message.objects.get(task_id=waiting.id).state == "ready"
    assert celery("control", "resume_queue", "celery", "-t", "5")[0] == 0
    assert waiting.get(timeout=15) == 3
