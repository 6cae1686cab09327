"""End to end in headless Chromium: log in to the admin, open the overview and a failed task."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.utils import timezone

from djqueue import states
from djqueue.client.base import app
from djqueue.backends import ResultRecord
from djqueue.models import TaskResult
from djqueue.serialization import dumps
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


@pytest.mark.django_db(transaction=True)
def test_admin_in_a_real_browser(browser: Browser, live_server, django_user_model) -> None:
    django_user_model.objects.create_superuser("boss", "boss@example.com", "s3cret-pw")
    add.apply_async((1, 2), queue="browser-queue")
    content_type, body = dumps({"exc_type": "ValueError", "exc_module": "builtins",
                                "exc_message": ["bad input"]})
    app.backend.store([ResultRecord("failed-in-browser", states.FAILURE, "tasks.add", content_type,
                                    body, f"Traceback (most recent call last):\n  {SCRIPT}\n"
                                    "ValueError: bad input", repr([SCRIPT]), "{}", "w@host", 0.1,
                                    timezone.now())])
    failed = TaskResult.objects.get(task_id="failed-in-browser")

    browser.open(f"{live_server.url}/admin/login/?next=/admin/djqueue/message/overview/")
    landed = browser.act(lambda: browser.evaluate(
        "document.getElementById('id_username').value = 'boss';"
        "document.getElementById('id_password').value = 's3cret-pw';"
        "document.getElementById('login-form').submit()"))
    assert landed.endswith("/admin/djqueue/message/overview/")
    text = browser.evaluate("document.body.innerText")
    assert "Task queue overview" in text and "browser-queue" in text

    browser.open(f"{live_server.url}/admin/djqueue/taskresult/{failed.pk}/change/")
    text = browser.evaluate("document.body.innerText")
    assert "FAILURE" in text and "ValueError: bad input" in text
    assert SCRIPT in text  # shown as text ...
    scripts = browser.evaluate(json.dumps(SCRIPT).join(
        ["Array.from(document.scripts).filter(s => s.outerHTML.includes(", ")).length"]))
    assert scripts == 0  # ... never as an element
