"""The way out: the Celery-style test project runs on real Celery 5 with RabbitMQ, its files
changed only in their import lines (``djqueue`` back to ``celery``), its settings only in what
docs/deployment.md ("Moving to Celery and back") lists: ``djqueue`` in ``INSTALLED_APPS`` becomes
``django_celery_results`` (the same ``"django-db"`` result backend), and ``CELERY_BROKER_URL``
points at RabbitMQ. The same calls give the same answers on both."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from .celery_project_support import PROJECT, project_worker  # noqa: F401 - a fixture
from .conftest import WorkerProcess, database_url, executions, wait_until

pytestmark = [pytest.mark.vendor_neutral, pytest.mark.process]

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
#: An import line of djqueue: the only lines the move changes.
IMPORT = re.compile(r"^(\s*)(from|import) djqueue\b", re.M)
#: The same calls on both systems; the answers are printed as one JSON line.
CALLS = """
import json, django
django.setup()
from djqueue import chord, group
from demoapp.tasks import add, fail, mul, record, xsum

answers = {
    "delay": add.delay(2, 3).get(timeout=30),
    "apply_async": mul.apply_async((4, 5), countdown=0).get(timeout=30),
    "chain": (add.s(2, 2) | mul.s(3)).delay().get(timeout=30),
    "group": group(add.s(i, i) for i in range(4)).delay().get(timeout=30),
    "chord": chord(add.s(i, i) for i in range(4))(xsum.s()).get(timeout=30),
    "record": record.delay("way-out").get(timeout=30),
}
try:
    fail.delay("boom").get(timeout=30)
except Exception as exc:
    answers["fail"] = [type(exc).__name__, str(exc)]
print(json.dumps(answers, sort_keys=True))
"""


def to_celery(text: str) -> str:
    return IMPORT.sub(lambda m: f"{m.group(1)}{m.group(2)} celery", text)


def run_calls(python: str, project: Path, env: dict[str, str], calls: str) -> dict[str, object]:
    done = subprocess.run([python, "-c", calls], cwd=project, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def celery_python() -> str:
    python = os.environ.get("DJQUEUE_TEST_CELERY_PYTHON", "")
    if not python or not os.path.exists(python):
        message = ("real Celery is not installed (scripts/test makes .venv/celery5 and sets "
                   "DJQUEUE_TEST_CELERY_PYTHON)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python


def test_the_project_runs_on_celery_and_rabbitmq_with_only_its_imports_changed(
    celery_python: str, project_worker: Callable[..., WorkerProcess],  # noqa: F811
    worker_env: dict[str, str], record_file: Path, tmp_path: Path,
) -> None:
    # The project as Celery would run it: every changed line is an import line.
    moved = tmp_path / "celery_project"
    shutil.copytree(PROJECT, moved, ignore=shutil.ignore_patterns("__pycache__"))
    changed = 0
    for path in moved.rglob("*.py"):
        before = path.read_text()
        after = to_celery(before)
        for old, new in zip(before.splitlines(), after.splitlines()):
            if old != new:
                assert IMPORT.match(old), old
                changed += 1
        path.write_text(after)
    assert changed >= 2  # proj/celery.py and the task modules

    # djqueue: the project as it is, with its own worker.
    djqueue_env = {**worker_env, "DATABASE_URL": database_url(),
                   "DJANGO_SETTINGS_MODULE": "proj.settings"}
    djqueue_env.pop("DJQUEUE_EXTRA_IMPORTS", None)
    project_worker("-c", "2")
    on_djqueue = run_calls(sys.executable, PROJECT, djqueue_env, CALLS)

    # Celery: RabbitMQ as broker, django-celery-results for the same "django-db" backend.
    queue = f"way-out-{uuid.uuid4().hex[:8]}"
    settings = {
        "INSTALLED_APPS": ["django.contrib.contenttypes", "django.contrib.auth",
                           "django_celery_results", "demoapp"],
        "CELERY_BROKER_URL": RABBITMQ, "CELERY_TASK_DEFAULT_QUEUE": queue,
    }
    celery_env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'celery.sqlite3'}",
                  "DJANGO_SETTINGS_MODULE": "proj.settings",
                  "DJQUEUE_EXTRA_SETTINGS": json.dumps(settings),
                  "DJQUEUE_RECORD_FILE": str(record_file), "PYTHONUNBUFFERED": "1"}
    subprocess.run([celery_python, "manage.py", "migrate", "-v", "0"], cwd=moved, env=celery_env,
                   check=True, timeout=120)
    log = tmp_path / "celery-worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [celery_python, "-m", "celery", "-A", "proj", "worker", "-l", "info", "-c", "2"],
            cwd=moved, env=celery_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_until(lambda: " ready." in log.read_text(errors="replace"), timeout=60,
                   what="the Celery worker")
        on_celery = run_calls(celery_python, moved, celery_env, to_celery(CALLS))
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(10)
        subprocess.run([celery_python, "-c", "from kombu import Connection\n"
                        f"with Connection({RABBITMQ!r}) as c: c.default_channel.queue_delete("
                        f"{queue!r})"], capture_output=True, timeout=30)

    assert on_djqueue == on_celery, (on_djqueue, on_celery)
    assert on_djqueue["chord"] == 12 and on_djqueue["fail"] == ["ValueError", "boom"]
    assert executions(record_file)["way-out"] == 2  # once on each, counted from what it wrote
