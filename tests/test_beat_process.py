"""Real ``celery beat`` processes (and ``celery worker -B``) against the real database."""

from __future__ import annotations

import datetime
import os
import signal

from django.contrib.auth.models import User
from django.test import Client

from djqueue.models import BeatState, Message, PeriodicTask, PeriodicTaskRun
from djqueue.serialization import loads

from .conftest import WorkerProcess, wait_until

SENT = "Scheduler: Sending due task"
PERIOD = 0.4


def interval_entry(name: str, task: str = "tasks.add", args: list | None = None) -> PeriodicTask:
    return PeriodicTask.objects.create(name=name, task=task, interval_seconds=PERIOD,
                                       args=args if args is not None else [1, 1])


def runs_of(entry: PeriodicTask) -> list[datetime.datetime]:
    return list(entry.runs.order_by("scheduled_at").values_list("scheduled_at", flat=True))


def assert_each_run_enqueued_once(entry: PeriodicTask) -> None:
    """Every run sent is one message, on the entry's grid, no time twice."""
    times = runs_of(entry)
    task_ids = list(entry.runs.values_list("task_id", flat=True))
    messages = list(Message.objects.filter(task_name=entry.task).values_list("task_id", flat=True))
    assert sorted(messages) == sorted(task_ids)
    assert len(set(times)) == len(times)
    period = datetime.timedelta(seconds=PERIOD)
    for earlier, later in zip(times, times[1:]):
        assert (later - earlier) % period == datetime.timedelta(0) and later > earlier


def test_two_beats_at_once_send_each_run_once(start_beat) -> None:
    entry = interval_entry("two-beats")
    # A long lease: on a loaded machine a short one could legitimately change hands mid-test.
    beats = [start_beat(env={"DJQUEUE_BEAT_LEASE_SECONDS": "30"}) for _ in range(2)]
    wait_until(lambda: entry.runs.count() >= 8, timeout=30, what="8 runs")
    # The standby first: a leader stopped first releases its lease, and the standby rightly takes
    # over if a tick comes before its own SIGTERM (seen on a loaded machine).
    for beat in sorted(beats, key=lambda beat: SENT in beat.log()):
        beat.send(signal.SIGTERM)
        assert beat.wait() == 0
    assert_each_run_enqueued_once(entry)
    senders = [beat for beat in beats if SENT in beat.log()]
    assert len(senders) == 1, "both beats sent runs"
    assert senders[0].log().count(f"{SENT} two-beats (tasks.add)") == entry.runs.count()
    standby = next(beat for beat in beats if beat is not senders[0])
    assert "is the active scheduler; standing by." in standby.log()
    assert "Released leadership." in senders[0].log()


def test_killing_the_leader_hands_over(start_beat) -> None:
    entry = interval_entry("failover")
    beats = [start_beat(), start_beat()]
    wait_until(lambda: entry.runs.count() >= 3, timeout=30, what="3 runs")
    leader = next(beat for beat in beats if SENT in beat.log())
    other = next(beat for beat in beats if beat is not leader)
    leader.kill()  # SIGKILL: no chance to release the lease
    before = entry.runs.count()
    other.wait_for("Acting as the active scheduler", timeout=20)
    wait_until(lambda: entry.runs.count() >= before + 3, timeout=20, what="runs after failover")
    other.kill()
    assert SENT in other.log()
    assert_each_run_enqueued_once(entry)


def test_an_admin_edit_reaches_a_running_beat(start_beat) -> None:
    entry = interval_entry("edited", args=[1, 1])
    start_beat()
    wait_until(lambda: entry.runs.exists(), timeout=20, what="a first run")
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    form = {
        "name": "edited", "task": "tasks.add", "enabled": "on", "description": "",
        "kind": "interval", "interval_seconds": str(PERIOD), "crontab_minute": "*",
        "crontab_hour": "*", "crontab_day_of_week": "*", "crontab_day_of_month": "*",
        "crontab_month_of_year": "*", "start_time_0": "", "start_time_1": "",
        "args": "[40, 2]", "kwargs": "{}", "queue": "", "priority": "", "expires": "",
    }
    response = client.post(f"/admin/djqueue/periodictask/{entry.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]

    def args_sent() -> list:
        return [loads(body, content_type, ["json"])["args"]
                for body, content_type in Message.objects.values_list("body", "content_type")]

    wait_until(lambda: [40, 2] in args_sent(), timeout=20, what="a run with the new arguments")
    assert [1, 1] in args_sent()


def test_the_admin_refuses_bad_input_and_keeps_nothing(transactional_db) -> None:
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    base = {
        "name": "bad", "task": "tasks.add", "enabled": "on", "kind": "crontab",
        "interval_seconds": "", "crontab_minute": "*/15", "crontab_hour": "*",
        "crontab_day_of_week": "mon-fri", "crontab_day_of_month": "*",
        "crontab_month_of_year": "*", "start_time_0": "", "start_time_1": "",
        "args": "[]", "kwargs": "{}", "queue": "", "priority": "", "expires": "",
    }
    for change, expected in [
        ({"args": "[1, 2"}, "Enter a valid JSON."),
        ({"args": '{"x": 1}'}, "must be a JSON array"),
        ({"kwargs": "[1]"}, "must be a JSON object"),
        ({"crontab_minute": "61"}, "out of range for minute"),
        ({"crontab_day_of_week": "someday"}, "not a crontab pattern"),
        ({"kind": "interval"}, "needs the seconds between runs"),
        ({"task": "tasks.nope"}, "No task named"),
        ({"priority": "256"}, "less than or equal to 255"),
    ]:
        response = client.post("/admin/djqueue/periodictask/add/", {**base, **change})
        assert response.status_code == 200 and expected in response.content.decode(), change
    assert not PeriodicTask.objects.exists()
    assert client.post("/admin/djqueue/periodictask/add/", base).status_code == 302
    row = PeriodicTask.objects.get()
    assert row.schedule.expression == "*/15 * * * mon-fri"
    # A row from CELERYBEAT_SCHEDULE: only its enabled flag (and description) can change here.
    row.from_settings = True
    row.save()
    changed = {**base, "args": "[9]", "crontab_minute": "0", "enabled": ""}
    response = client.post(f"/admin/djqueue/periodictask/{row.pk}/change/", changed)
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.args, row.crontab_minute, row.enabled) == ([], "*/15", False)
    # The bulk actions use QuerySet.update(), and still tell running beats.
    version = BeatState.objects.get().version
    response = client.post("/admin/djqueue/periodictask/",
                           {"action": "enable", "_selected_action": [row.pk]})
    assert response.status_code == 302
    assert PeriodicTask.objects.get().enabled and BeatState.objects.get().version == version + 1


def test_worker_with_embedded_beat_runs_periodic_tasks(start_worker, record_file) -> None:
    interval_entry("recorded", task="example_project.demo.tasks.record", args=["tick"])
    worker: WorkerProcess = start_worker(
        "-B", "-c", "1",
        env={"DJQUEUE_BEAT_LEASE_SECONDS": "1.5", "CELERYBEAT_MAX_LOOP_INTERVAL": "0.1"},
    )
    wait_until(lambda: record_file.read_text().count("tick ") >= 3, timeout=30,
               what="3 periodic executions")
    worker.send(signal.SIGTERM)
    assert worker.wait() == 0
    log = worker.log()
    assert "INFO/Beat] Scheduler: Sending due task recorded" in log
    assert "beat: Stopped." in log
    assert PeriodicTaskRun.objects.count() >= 3


def test_embedded_beat_stops_when_its_worker_is_killed(start_worker) -> None:
    worker = start_worker("-B", "-c", "1", "-P", "solo",
                          env={"CELERYBEAT_MAX_LOOP_INTERVAL": "0.1"})
    worker.wait_for("beat: Acting as the active scheduler")
    os.kill(worker.pid, signal.SIGKILL)  # the worker only, not its process group
    wait_until(lambda: "beat: Stopped." in worker.log(), what="the orphaned beat to stop")
    log = worker.log()
    assert "beat: The worker is gone; stopping." in log and "beat: Released leadership." in log


def test_beat_logfile_and_loglevel(start_beat, tmp_path) -> None:
    logfile = tmp_path / "beat.log"
    beat = start_beat("--logfile", str(logfile), "-l", "debug", ready=False)
    wait_until(lambda: logfile.exists() and "Loaded 0 periodic task(s)" in logfile.read_text(),
               timeout=20, what="the log file")
    beat.send(signal.SIGINT)
    assert beat.wait() == 0
    assert "is starting." in beat.log() and "beat: Starting..." not in beat.log()
