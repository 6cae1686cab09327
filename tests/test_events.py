"""The event stream in-process: what a worker with events on writes (and in how many statements),
what ``celery events`` prints from it, pruning, the observability settings' checks, and the JSON
format of the worker's own task lines."""

from __future__ import annotations

import datetime
import io
import json
import logging

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from djqueue.cli import events as events_cli
from djqueue.client.base import app
from djqueue.events.checks import check_observability
from djqueue.events.models import Event
from djqueue.utils.log import JsonFormatter
from djqueue.worker import events as worker_events
from djqueue.worker.loop import Worker
from example_project.demo.tasks import fail
from tasks import add
from tests import fault_tasks

pytestmark = pytest.mark.django_db(transaction=True)


def drained(rounds: int = 12, hostname: str = "events@test") -> Worker:
    worker = Worker(app, pool="solo", poll_interval=0, hostname=hostname)
    worker.start()
    for _ in range(rounds):
        worker.loop()
    return worker


def test_a_worker_without_events_writes_none() -> None:
    add.delay(1, 1)
    worker = drained()
    assert not worker.events.enabled and Event.objects.count() == 0


def test_task_events_are_written_in_one_statement_per_round_not_per_task(record_file) -> None:
    app.conf.CELERY_SEND_EVENTS = True
    ok = [add.delay(i, i) for i in range(20)]
    bad = fail.delay("no")
    retried = fault_tasks.flaky.delay("k", 1)
    with CaptureQueriesContext(connection) as queries:
        worker = drained(rounds=30)
    assert retried.get(timeout=1) == 1
    # The table's name quoted as the vendor quotes it (MySQL: backticks).
    insert = f"INSERT INTO {connection.ops.quote_name('djqueue_event')}"
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(insert)]
    assert 0 < len(inserts) < 20, len(inserts)
    kinds: dict[str, list[str]] = {}
    for event in Event.objects.all():
        kinds.setdefault(event.type, []).append(event.task_id)
    assert set(kinds["task-succeeded"]) == {r.id for r in ok} | {retried.id}
    assert kinds["task-failed"] == [bad.id] and kinds["task-retried"] == [retried.id]
    assert kinds["task-received"].count(retried.id) == 2  # received again after its retry
    assert len(kinds["task-started"]) == 23
    failed = Event.objects.get(type="task-failed")
    assert failed.hostname == "events@test" and "DemoError" in failed.data()["exception"]
    assert "Traceback" in failed.data()["traceback"]
    received = Event.objects.filter(type="task-received", task_id=ok[3].id).get()
    assert received.task_name == "tasks.add" and received.data()["args"] == "[3, 3]"
    worker.events.heartbeat()
    worker.events.offline()
    assert list(Event.objects.filter(task_id="").values_list("type", flat=True)) == [
        "worker-heartbeat", "worker-offline"]
    assert Event.objects.get(type="worker-offline").data()["processed"] == 23


def test_celery_events_dump_prints_each_event_and_the_table_shows_the_last_state() -> None:
    app.conf.CELERY_SEND_EVENTS = True
    result = add.delay(4, 4)
    worker = drained(hostname="dump@test")
    worker.events.online()
    out, err = io.StringIO(), io.StringIO()
    call_command("celery", "events", "--dump", "--once", "--since", "600", stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1].split(":")[0] for line in lines] == [
        "task received", "task started", "task succeeded", "worker online"]
    assert lines[0].startswith("dump@test [")
    assert f"task received: tasks.add({result.id}) args=[4, 4], kwargs={{}}" in lines[0]
    assert f"task succeeded: tasks.add({result.id}) result=8, runtime=" in lines[2]
    assert "processed=1" in lines[3] and "sw_ident" not in lines[3]
    assert err.getvalue() == ""  # there are events: no hint
    table = io.StringIO()
    events_cli.run({"dump": False, "interval": 0.1, "since": 600, "once": True}, table, err)
    text = table.getvalue()
    assert "dump@test" in text and "online" in text
    assert f"{result.id}  tasks.add" in text and "SUCCESS" in text


def test_only_new_events_without_since_and_a_hint_when_there_are_none() -> None:
    out, err = io.StringIO(), io.StringIO()
    events_cli.run({"dump": True, "interval": 0.1, "since": None, "once": True}, out, err)
    assert out.getvalue() == "" and "-E" in err.getvalue()
    Event.objects.create(type="worker-online", hostname="old@test", timestamp=timezone.now())
    out, err = io.StringIO(), io.StringIO()
    events_cli.run({"dump": True, "interval": 0.1, "since": None, "once": True}, out, err)
    assert out.getvalue() == "" and err.getvalue() == ""


def test_old_events_are_pruned() -> None:
    now = timezone.now()
    Event.objects.create(type="worker-heartbeat", hostname="a", timestamp=now)
    Event.objects.create(type="worker-heartbeat", hostname="a",
                         timestamp=now - datetime.timedelta(hours=2))
    assert worker_events.prune("default", 3600) == 1
    assert Event.objects.count() == 1


def test_the_worker_task_lines_in_json_carry_the_task(caplog: pytest.LogCaptureFixture) -> None:
    result = add.delay(2, 3)
    with caplog.at_level(logging.INFO, logger="djqueue.worker"):
        drained(hostname="json@test")
    lines = {record.getMessage().split(":")[0]: json.loads(JsonFormatter().format(record))
             for record in caplog.records if hasattr(record, "djqueue_task")}
    done = next(line for key, line in lines.items() if "succeeded" in key)
    assert done["message"].startswith(f"Task tasks.add[{result.id}] succeeded in")
    assert (done["task_id"], done["task_name"], done["queue"], done["worker"], done["retries"]) == (
        result.id, "tasks.add", "celery", "json@test", 0)
    received = lines["Received task"]
    assert received["task_id"] == result.id and received["queue"] == "celery"


@pytest.mark.parametrize(("name", "value", "code"), [
    ("DJQUEUE_LOG_FORMAT", "xml", "djqueue.E040"),
    ("CELERY_SEND_EVENTS", "yes", "djqueue.E041"),
    ("DJQUEUE_EVENTS_EXPIRES", 0, "djqueue.E042"),
    ("DJQUEUE_EVENTS_EXPIRES", "1h", "djqueue.E042"),
])
def test_bad_observability_settings_are_errors(settings, name, value, code) -> None:
    assert check_observability() == []
    setattr(settings, name, value)
    assert [m.id for m in check_observability()] == [code]
