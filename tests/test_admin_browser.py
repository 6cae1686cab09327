"""End to end in headless Chromium: log in to the admin, watch the overview (its chart, saved as a
screenshot, and its refreshes), open a failed task."""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from pathlib import Path

import pytest
from django.utils import timezone

from djqueue import states
from djqueue.client.base import app
from djqueue.backends import ResultRecord
from djqueue.models import TaskResult
from djqueue.serialization import dumps
from djqueue.stats import store
from tasks import add

from .browser import Browser, chromium_path

SCRIPT = "<script>alert(1)</script>"

# What the browser adds is rendering, the login form and escaping in the page, none of it SQL: the
# admin's queries are checked on each database by tests/test_admin.py.
pytestmark = pytest.mark.vendor_neutral


@pytest.fixture
def browser(tmp_path: Path):
    if chromium_path() is None:
        message = ("CHROMIUM IS NOT INSTALLED: the admin's browser end-to-end check did NOT run "
                   "(apt-get install chromium; scripts/test installs it when run as root)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    chromium = Browser(tmp_path / "profile")
    yield chromium
    chromium.close()


def an_hour_of_tasks() -> dict[tuple[datetime.datetime, str, str, str], list[float]]:
    """Statistics as a worker writes them: two queues busy for the last hour, some failures."""
    now = timezone.now().replace(second=0, microsecond=0)
    counts = {}
    for ago in range(60):
        minute = now - datetime.timedelta(minutes=ago)
        for queue, base in (("celery", 40), ("browser-queue", 12)):
            ok = int(base * (1.2 + math.sin(ago / 6)))
            counts[(minute, queue, "tasks.add", "SUCCESS")] = [ok, ok * 0.002, 0, ok, *[0] * 14]
            if ago % 6 == 0:
                counts[(minute, queue, "tasks.add", "FAILURE")] = [3, 0.01, 0, 3, *[0] * 14]
    return counts


@pytest.mark.django_db(transaction=True)
def test_admin_in_a_real_browser(browser: Browser, live_server, django_user_model,
                                 tmp_path: Path, artifact) -> None:
    django_user_model.objects.create_superuser("boss", "boss@example.com", "s3cret-pw")
    add.apply_async((1, 2), queue="browser-queue")
    content_type, body = dumps({"exc_type": "ValueError", "exc_module": "builtins",
                                "exc_message": ["bad input"]})
    app.backend.store([ResultRecord("failed-in-browser", states.FAILURE, "tasks.add", content_type,
                                    body, f"Traceback (most recent call last):\n  {SCRIPT}\n"
                                    "ValueError: bad input", repr([SCRIPT]), "{}", "w@host", 0.1,
                                    timezone.now())])
    failed = TaskResult.objects.get(task_id="failed-in-browser")
    store.save("default", 1, an_hour_of_tasks())

    browser.open(f"{live_server.url}/admin/login/?next=/admin/djqueue/message/overview/%3Frefresh=1")
    landed = browser.act(lambda: browser.evaluate(
        "document.getElementById('id_username').value = 'boss';"
        "document.getElementById('id_password').value = 's3cret-pw';"
        "document.getElementById('login-form').submit()"))
    assert landed.endswith("/admin/djqueue/message/overview/?refresh=1")
    text = browser.evaluate("document.body.innerText")
    assert "Task queue overview" in text and "browser-queue" in text
    bars = browser.evaluate("[document.querySelectorAll('svg.djqueue-chart').length,"
                            " document.querySelectorAll('rect.djqueue-succeeded').length,"
                            " document.querySelectorAll('rect.djqueue-failed').length,"
                            " document.querySelector('svg.djqueue-chart').getBoundingClientRect().height]")
    # Two queues' charts, a bar a minute (one may have left the hour since), drawn at a real size.
    assert bars[0] == 2 and 118 <= bars[1] <= 120 and bars[2] == 20 and bars[3] > 50
    shot = artifact(browser.screenshot(tmp_path / "admin-overview.png"))
    print(f"\nscreenshot of the overview: {shot}")  # and listed at the end of the run

    # The page refreshes itself: a queue that finishes tasks now appears without a reload.
    browser.evaluate("window.__sameDocument = true")
    minute = timezone.now().replace(second=0, microsecond=0)
    store.save("default", 2, {(minute, "appears-later", "tasks.add", "SUCCESS"):
                              [5, 0.0, 5, *[0] * 15]})
    deadline = time.monotonic() + 30
    while "appears-later" not in browser.evaluate("document.getElementById('djqueue-live').innerText"):
        assert time.monotonic() < deadline, "the overview did not refresh itself"
        time.sleep(0.2)
    assert browser.evaluate("window.__sameDocument") is True  # swapped in place, not reloaded

    browser.open(f"{live_server.url}/admin/djqueue/taskresult/{failed.pk}/change/")
    text = browser.evaluate("document.body.innerText")
    assert "FAILURE" in text and "ValueError: bad input" in text
    assert SCRIPT in text  # shown as text ...
    scripts = browser.evaluate(json.dumps(SCRIPT).join(
        ["Array.from(document.scripts).filter(s => s.outerHTML.includes(", ")).length"]))
    assert scripts == 0  # ... never as an element
