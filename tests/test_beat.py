"""Beat in-process against the real database, driven by ``tick(now=...)`` on a fixed clock."""

from __future__ import annotations

import datetime
import time

import pytest
from django.db import IntegrityError, transaction
from django.test import override_settings

from djqueue.client.base import app
from djqueue.beat.scheduler import Beat
from djqueue.beat.checks import check_beat_settings
from djqueue.models import BeatState, Message, PeriodicTask, PeriodicTaskRun
from djqueue.schedules import crontab
from djqueue.serialization import loads

pytestmark = pytest.mark.django_db(transaction=True)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = datetime.timedelta(minutes=1)


def sent() -> list[tuple[str, list]]:
    return [(m.task_name, loads(m.body, m.content_type, ["json"])["args"])
            for m in Message.objects.order_by("id")]


def scheduled(name: str) -> list[datetime.datetime]:
    return list(PeriodicTaskRun.objects.filter(periodic_task__name=name)
                .order_by("scheduled_at").values_list("scheduled_at", flat=True))


@pytest.fixture
def beat() -> Beat:
    return Beat(app, lease_seconds=5, name="beat-a")


def test_interval_runs_once_per_period_and_keeps_count(beat: Beat) -> None:
    PeriodicTask.objects.create(name="add", task="tasks.add", interval_seconds=60, args=[2, 2],
                                start_time=T0, queue="periodic", priority=7, expires=30)
    beat.tick(now=T0 - datetime.timedelta(seconds=1))
    assert sent() == []
    beat.tick(now=T0)
    beat.tick(now=T0 + datetime.timedelta(seconds=30))
    assert sent() == [("tasks.add", [2, 2])]
    message = Message.objects.get()
    assert (message.queue, message.priority) == ("periodic", 7)
    assert message.expires is not None
    beat.tick(now=T0 + MINUTE)
    row = PeriodicTask.objects.get()
    assert (row.last_run_at, row.total_run_count) == (T0 + MINUTE, 2)
    assert scheduled("add") == [T0, T0 + MINUTE]
    run = PeriodicTaskRun.objects.order_by("scheduled_at").first()
    assert Message.objects.order_by("id").first().task_id == run.task_id


def test_missed_runs_are_sent_once_and_the_schedule_goes_on(beat: Beat) -> None:
    PeriodicTask.objects.create(name="add", task="tasks.add", interval_seconds=60, args=[1, 1],
                                last_run_at=T0)
    beat.tick(now=T0 + 10 * MINUTE + datetime.timedelta(seconds=5))  # ten runs missed
    assert len(sent()) == 1
    assert scheduled("add") == [T0 + 10 * MINUTE]
    beat.tick(now=T0 + 10 * MINUTE + datetime.timedelta(seconds=59))
    assert len(sent()) == 1
    beat.tick(now=T0 + 11 * MINUTE)
    assert scheduled("add") == [T0 + 10 * MINUTE, T0 + 11 * MINUTE]


def test_a_scheduler_with_stale_information_sends_nothing_twice() -> None:
    PeriodicTask.objects.create(name="add", task="tasks.add", interval_seconds=60, args=[1, 1],
                                last_run_at=T0)
    first = Beat(app, lease_seconds=0.2, name="beat-a")
    second = Beat(app, lease_seconds=0.2, name="beat-b")
    first.tick(now=T0 + 30 * datetime.timedelta(seconds=1))  # leader; loads the entry
    time.sleep(0.3)  # first's lease runs out as if it had hung
    second.tick(now=T0 + MINUTE)  # takes over and sends the run of T0 + 1 min
    assert second.is_leader and len(sent()) == 1
    time.sleep(0.3)
    first.tick(now=T0 + MINUTE)  # back, leader again, still believing the run is due
    assert first.is_leader
    assert len(sent()) == 1 and scheduled("add") == [T0 + MINUTE]
    first.tick(now=T0 + 2 * MINUTE)  # it reloaded, and goes on from there
    assert scheduled("add") == [T0 + MINUTE, T0 + 2 * MINUTE]


def test_the_run_key_refuses_a_second_send_even_if_last_run_at_is_reset(beat: Beat) -> None:
    entry = PeriodicTask.objects.create(name="add", task="tasks.add", interval_seconds=60,
                                        args=[1, 1], start_time=T0)
    beat.tick(now=T0)
    PeriodicTask.objects.filter(pk=entry.pk).update(last_run_at=None)
    beat.release()
    Beat(app, lease_seconds=5, name="beat-b").tick(now=T0 + datetime.timedelta(seconds=1))
    assert len(sent()) == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        PeriodicTaskRun.objects.create(periodic_task=entry, scheduled_at=T0, task_id="x")


def test_one_off_runs_once_then_disables_itself(beat: Beat) -> None:
    PeriodicTask.objects.create(name="once", task="tasks.add", interval_seconds=1, args=[3, 3],
                                start_time=T0, one_off=True)
    for seconds in range(5):
        beat.tick(now=T0 + datetime.timedelta(seconds=seconds))
    assert sent() == [("tasks.add", [3, 3])]
    assert PeriodicTask.objects.get().enabled is False


def test_changes_are_noticed_through_the_version_marker(beat: Beat) -> None:
    entry = PeriodicTask.objects.create(name="add", task="tasks.add", interval_seconds=60,
                                        args=[1, 1], last_run_at=T0)
    beat.tick(now=T0)
    version = BeatState.objects.get().version
    entry.args = [5, 5]
    entry.save()
    assert BeatState.objects.get().version == version + 1
    beat.tick(now=T0 + MINUTE)
    entry.enabled = False
    entry.save()
    beat.tick(now=T0 + 2 * MINUTE)
    assert sent() == [("tasks.add", [5, 5])]


def test_crontab_across_daylight_saving_time(beat: Beat) -> None:
    app.conf.CELERY_TIMEZONE = "Europe/Berlin"
    night = datetime.datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    PeriodicTask.objects.create(name="daily", task="tasks.add", kind="crontab",
                                crontab_minute="30", crontab_hour="2", last_run_at=night)
    PeriodicTask.objects.create(name="hourly", task="tasks.add", kind="crontab",
                                crontab_minute="30", last_run_at=night)
    for quarter in range(4 * 6):
        beat.tick(now=night + quarter * datetime.timedelta(minutes=15))
    local = {name: [t.astimezone(app.conf.timezone).strftime("%H:%M%z") for t in scheduled(name)]
             for name in ("daily", "hourly")}
    assert local == {
        "daily": ["02:30+0200"],
        "hourly": ["00:30+0200", "01:30+0200", "02:30+0200", "02:30+0100", "03:30+0100",
                   "04:30+0100"],
    }


def test_without_utc_crontabs_follow_djangos_time_zone(beat: Beat) -> None:
    PeriodicTask.objects.create(name="nine", task="tasks.add", kind="crontab", crontab_minute="0",
                                crontab_hour="9", last_run_at=T0)  # T0 is 07:00 in New York
    with override_settings(CELERY_ENABLE_UTC=False, TIME_ZONE="America/New_York"):
        beat.tick(now=datetime.datetime(2026, 3, 1, 13, 59, tzinfo=UTC))
        assert sent() == []
        beat.tick(now=datetime.datetime(2026, 3, 1, 14, 0, tzinfo=UTC))
    assert scheduled("nine") == [datetime.datetime(2026, 3, 1, 14, 0, tzinfo=UTC)]


def test_settings_entries_are_synced_when_a_beat_takes_over(beat: Beat) -> None:
    schedule = {
        "add-every-30-seconds": {"task": "tasks.add", "schedule": datetime.timedelta(seconds=30),
                                 "args": (16, 16), "options": {"queue": "beat"}},
        "nightly": {"task": "tasks.add", "schedule": crontab(minute=0, hour=3), "args": (1, 2)},
    }
    PeriodicTask.objects.create(name="by-hand", task="tasks.add", interval_seconds=5)
    with override_settings(CELERYBEAT_SCHEDULE=schedule):
        beat.tick(now=T0)
    rows = {row.name: row for row in PeriodicTask.objects.all()}
    assert set(rows) == {"add-every-30-seconds", "nightly", "by-hand"}
    assert rows["add-every-30-seconds"].args == [16, 16]
    assert rows["add-every-30-seconds"].queue == "beat"
    assert rows["nightly"].schedule == crontab(minute=0, hour=3)
    PeriodicTask.objects.filter(name="nightly").update(enabled=False)
    beat.release()
    schedule = {"nightly": {"task": "tasks.add", "schedule": crontab(minute=0, hour=4)}}
    with override_settings(CELERYBEAT_SCHEDULE=schedule):
        Beat(app, lease_seconds=5, name="beat-b").tick(now=T0)
    rows = {row.name: row for row in PeriodicTask.objects.all()}
    assert set(rows) == {"nightly", "by-hand"}  # settings entries gone from settings are deleted
    assert rows["nightly"].schedule == crontab(minute=0, hour=4)
    assert rows["nightly"].enabled is False  # the database keeps what the admin decided


def test_only_one_beat_leads_and_a_released_lease_is_taken_at_once() -> None:
    first, second = Beat(app, lease_seconds=5, name="a"), Beat(app, lease_seconds=5, name="b")
    first.tick(now=T0)
    second.tick(now=T0)
    assert (first.is_leader, second.is_leader) == (True, False)
    first.release()
    second.tick(now=T0)
    first.tick(now=T0)
    assert (first.is_leader, second.is_leader) == (False, True)
    assert BeatState.objects.get().leader == "b"


@pytest.mark.parametrize(("schedule", "expected"), [
    ([], "djqueue.E101"),
    ({"x": {"task": "tasks.add", "schedule": crontab(minute=61)}}, "'61' is out of range"),
    ({"x": {"task": "tasks.add", "schedule": crontab(day_of_week="someday")}},
     "not a crontab pattern"),
    ({"x": {"task": "tasks.add", "schedule": 0}}, "'schedule' must be"),
    ({"x": {"task": "tasks.add", "schedule": 5, "args": {"a": 1}}}, "'args' must be a list"),
    ({"x": {"task": "tasks.add", "schedule": 5, "options": {"countdown": 3}}},
     "unsupported option(s) 'countdown'"),
    ({"x": {"task": "tasks.add", "schedule": 5, "options": {"priority": 300}}}, "priority"),
    ({"x": {"schedule": 5}}, "'task' must be a task name"),
    ({"x": {"task": "tasks.nope", "schedule": 5}}, "djqueue.W101"),
])
def test_checks_report_bad_entries(schedule: object, expected: str) -> None:
    with override_settings(CELERYBEAT_SCHEDULE=schedule):
        messages = check_beat_settings()
    assert len(messages) == 1
    assert expected in f"{messages[0].id} {messages[0].msg}"


def test_checks_accept_a_good_schedule_and_refuse_a_short_lease() -> None:
    good = {"add": {"task": "tasks.add", "schedule": crontab(minute="*/15", day_of_week="mon-fri"),
                    "args": (1, 2), "kwargs": {}, "options": {"queue": "q", "expires": 10}}}
    with override_settings(CELERYBEAT_SCHEDULE=good):
        assert check_beat_settings() == []
    with override_settings(DJQUEUE_BEAT_LEASE_SECONDS=2, CELERYBEAT_MAX_LOOP_INTERVAL=1):
        assert [m.id for m in check_beat_settings()] == ["djqueue.E105"]


def test_an_entry_that_cannot_be_sent_is_held_and_the_others_go_on(
    beat: Beat, caplog: pytest.LogCaptureFixture
) -> None:
    app.conf.CELERY_ROUTES = {"tasks.add": {"priority": 999}}  # refused by routing at send time
    bad = PeriodicTask.objects.create(name="bad", task="tasks.add", interval_seconds=60,
                                      args=[1, 1], start_time=T0)
    PeriodicTask.objects.create(name="good", task="example_project.demo.tasks.record",
                                interval_seconds=60, args=["x"], start_time=T0)
    beat.tick(now=T0)
    beat.tick(now=T0 + datetime.timedelta(seconds=1))
    assert sent() == [("example_project.demo.tasks.record", ["x"])]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Couldn't apply scheduled task bad" in errors[0]
    assert PeriodicTask.objects.get(pk=bad.pk).last_run_at is None  # nothing recorded, nothing lost
    app.conf.CELERY_ROUTES = None
    bad.save()  # fixed: the change brings it back
    beat.tick(now=T0 + datetime.timedelta(seconds=2))
    assert ("tasks.add", [1, 1]) in sent()
    assert scheduled("bad") == [T0]
