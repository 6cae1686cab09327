"""The admin as a live monitor: the overview's chart, prefix search, runtimes as durations, and
stopped workers leaving the list (the Django test client; the browser check is
tests/test_admin_browser.py)."""

from __future__ import annotations

import datetime
import re

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from djqueue import states
from djqueue.admin.base import duration
from djqueue.admin.chart import nice_ceiling
from djqueue.backends import ResultRecord
from djqueue.client.base import app
from djqueue.models import WorkerNode
from djqueue.stats import store
from tasks import add


def url(name: str) -> str:
    return reverse(f"admin:djqueue_{name}")


def test_durations_read_as_durations() -> None:
    assert [duration(s) for s in (None, 0.0000004, 0.0012376429999676475, 0.25, 0.9999, 3.4,
                                  125, 3725)] == [
        "–", "0.4 µs", "1.2 ms", "250 ms", "1 s", "3.4 s", "2 min 5 s", "1 h 2 min"]
    assert [nice_ceiling(n) for n in (0, 1, 3, 7, 11, 180, 501)] == [1, 1, 5, 10, 20, 200, 1000]


def test_overview_charts_the_last_hour_per_queue(admin_client: Client) -> None:
    now = timezone.now().replace(second=0, microsecond=0)
    counts = {}
    for ago, ok, failed in ((0, 7, 1), (5, 40, 0), (58, 3, 2), (61, 100, 100)):  # 61: too old
        minute = now - datetime.timedelta(minutes=ago)
        counts[(minute, "chart-q", "tasks.add", "SUCCESS")] = [ok, 0.0, ok, *[0] * 15]
        counts[(minute, "chart-q", "tasks.add", "FAILURE")] = [failed, 0.0, failed, *[0] * 15]
    store.save("default", 1, counts)
    store.save("default", 2, {(now, "chart-q", "tasks.add", "SUCCESS"): [1, 0.0, 1, *[0] * 15],
                              (now, "other-q", "tasks.add", "RETRY"): [1, 0.0, 1, *[0] * 15]})
    page = admin_client.get(url("overview")).content.decode()
    assert "djqueue/overview.js" in page and 'id="djqueue-live"' in page
    assert "chart-q <span" in page and "51 succeeded, 3 failed" in page
    assert "other-q <span" not in page  # only retries: nothing succeeded or failed
    start = page.index('<svg class="djqueue-chart"')
    svg = page[start:page.index("</svg>", start)]
    assert len(re.findall(r'class="djqueue-succeeded"', svg)) == 3
    assert len(re.findall(r'class="djqueue-failed"', svg)) == 2
    assert f"{timezone.localtime(now):%H:%M}: 8 succeeded, 1 failed" in svg


def test_task_ids_are_found_by_their_first_characters(admin_client: Client) -> None:
    sent = add.apply_async((1, 1), task_id="abcdef-0001-prefix")
    add.apply_async((1, 1), task_id="abcxyz-0002-prefix")
    app.backend.store([ResultRecord("abcdef-0001-prefix", states.SUCCESS, "tasks.add",
                                    runtime=0.0012376429999676475, date_done=timezone.now())])
    for name in ("message_changelist", "taskresult_changelist"):
        page = admin_client.get(url(name) + "?q=abcdef").content.decode()
        assert sent.id in page and "abcxyz" not in page, name
        assert "its first characters" in page  # the search box says what it finds
    assert "abcxyz-0002" in admin_client.get(url("message_changelist") + "?q=abc").content.decode()
    assert "abcxyz" in admin_client.get(url("message_changelist") + "?q=tasks.").content.decode()
    assert "abcdef" not in admin_client.get(url("message_changelist") + "?q=bcd").content.decode()
    assert "abcdef" not in admin_client.get(url("message_changelist") + "?q=ABC").content.decode()
    results = admin_client.get(url("taskresult_changelist")).content.decode()
    assert "1.2 ms" in results and "0.00123" not in results


def test_stopped_workers_leave_the_list(admin_client: Client, settings) -> None:
    fields = dict(queues="celery", pool="solo", concurrency=1)
    long_ago = timezone.now() - datetime.timedelta(hours=2)
    WorkerNode.objects.create(hostname="gone@host", pid=1, heartbeat_at=long_ago,
                              stopped_at=long_ago, **fields)
    WorkerNode.objects.create(hostname="recent@host", pid=2, heartbeat_at=timezone.now(),
                              stopped_at=timezone.now(), **fields)
    page = admin_client.get(url("workernode_changelist")).content.decode()
    assert "recent@host" in page and "gone@host" not in page
    settings.DJQUEUE_WORKER_FORGET_AFTER = None
    assert "gone@host" in admin_client.get(url("workernode_changelist")).content.decode()
    settings.DJQUEUE_WORKER_FORGET_AFTER = 7200 + 60
    assert "gone@host" in admin_client.get(url("workernode_changelist")).content.decode()
