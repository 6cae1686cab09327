"""The Prometheus metrics (djqueue.contrib.prometheus), the ``celery metrics`` command and the
monitoring settings' checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core import checks
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from djqueue.models import WorkerNode
from djqueue.stats import store
from tasks import add


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_from_the_database(db, client: Client, tmp_path: Path) -> None:
    for i in range(3):
        add.apply_async((i, i), queue="metrics-q")
    add.apply_async((1, 1), queue="metrics-q", countdown=600)
    WorkerNode.objects.create(hostname="w1@host", pid=1, queues="metrics-q", pool="solo",
                              concurrency=1, heartbeat_at=timezone.now())
    minute = timezone.now().replace(second=0, microsecond=0)
    buckets = [0] * 16
    buckets[0], buckets[9] = 2, 1  # two under 1 ms, one between 1 s and 2.5 s
    for worker in (1, 2):  # two workers' rows add up
        store.save("default", worker, {
            (minute, "metrics-q", "tasks.add", "SUCCESS"): [3, 2.0, *buckets],
            (minute, "metrics-q", "tasks.add", "FAILURE"): [1, 0.5, *[0] * 6, 1, *[0] * 9],
            (minute, "metrics-q", "tasks.add", "RETRY"): [1, 0.0, 1, *[0] * 15],
        })
    with override_settings(ROOT_URLCONF="djqueue.contrib.prometheus"):
        response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    got = samples(response.content.decode())
    q = ("queue", "metrics-q")
    assert got["djqueue_queue_length", (q, ("state", "waiting"))] == 3
    assert got["djqueue_queue_length", (q, ("state", "scheduled"))] == 1
    assert got["djqueue_queue_oldest_waiting_seconds", (q,)] >= 0
    assert got["djqueue_queue_consumers", (q,)] == 1
    assert got["djqueue_workers_alive", ()] == 1
    name = ("name", "tasks.add")
    assert got["djqueue_task_succeeded_total", (name, q)] == 6
    assert got["djqueue_task_failed_total", (name, q)] == 2
    assert got["djqueue_task_retried_total", (name, q)] == 2
    # The histogram holds the tasks that ran (succeeded, failed, retried), cumulative.
    assert got["djqueue_task_runtime_seconds_bucket", (("le", "0.001"), name, q)] == 6
    assert got["djqueue_task_runtime_seconds_bucket", (("le", "1.0"), name, q)] == 8
    assert got["djqueue_task_runtime_seconds_bucket", (("le", "2.5"), name, q)] == 10
    assert got["djqueue_task_runtime_seconds_count", (name, q)] == 10
    assert got["djqueue_task_runtime_seconds_sum", (name, q)] == 5.0

    textfile = tmp_path / "djqueue.prom"
    call_command("celery", "metrics", "--textfile", str(textfile))
    assert samples(textfile.read_text())["djqueue_task_failed_total", (name, q)] == 2
    assert not list(tmp_path.glob("*.tmp*"))  # written beside it, then renamed


def test_metrics_command_says_what_it_cannot_write(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        call_command("celery", "metrics", "--textfile", str(tmp_path / "missing" / "x.prom"))
    assert exited.value.code == 1
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("settings", [
    {"DJQUEUE_STATS_RETENTION": 60},
    {"DJQUEUE_STATS_RETENTION": "2h"},
    {"DJQUEUE_STATS_RETENTION": float("nan")},
    {"DJQUEUE_WORKER_FORGET_AFTER": 10},  # shorter than the lost timeout (30 s)
    {"DJQUEUE_WORKER_FORGET_AFTER": True},
    {"DJQUEUE_WORKER_FORGET_AFTER": "1 day"},
])
def test_monitoring_settings_are_checked(settings: dict[str, object]) -> None:
    with override_settings(**settings):
        found = [m for m in checks.run_checks(tags=["djqueue"]) if m.id == "djqueue.E031"]
    assert len(found) == 1 and found[0].hint


def test_monitoring_settings_defaults_and_none_pass() -> None:
    with override_settings(DJQUEUE_WORKER_FORGET_AFTER=None, DJQUEUE_STATS_RETENTION=86400.0):
        assert not [m for m in checks.run_checks(tags=["djqueue"]) if m.id == "djqueue.E031"]
    assert not [m for m in checks.run_checks(tags=["djqueue"]) if m.id == "djqueue.E031"]


