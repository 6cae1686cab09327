"""Schedules on a fixed clock: Celery's crontab fields, month ends, daylight saving time."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from djqueue.schedules import crontab, maybe_schedule, schedule

UTC = datetime.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def runs(when, start: datetime.datetime, count: int, tz=UTC) -> list[str]:
    out, t = [], start
    for _ in range(count):
        t = when.following(t, tz)
        out.append(t.astimezone(tz).strftime("%Y-%m-%d %H:%M%z"))
    return out


def at(*args: int, tz=UTC) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=tz)


def test_fields_keep_celerys_meaning() -> None:
    every_quarter = crontab(minute="*/15")
    assert runs(every_quarter, at(2026, 1, 1, 10, 7), 3) == [
        "2026-01-01 10:15+0000", "2026-01-01 10:30+0000", "2026-01-01 10:45+0000"]
    weekdays = crontab(minute=0, hour=7, day_of_week="mon-fri")  # 2026-01-02 is a Friday
    assert runs(weekdays, at(2026, 1, 2, 8, 0), 2) == [
        "2026-01-05 07:00+0000", "2026-01-06 07:00+0000"]
    assert crontab(day_of_week="Sunday").expression == "* * * * sun"
    assert crontab(minute={30, 0}, hour=[8, 17]).expression == "0,30 8,17 * * *"
    # Celery, unlike cron(5), wants both day fields to match: Saturdays among the first 7 days.
    first_saturday = crontab(minute=0, hour=22, day_of_month="1-7", day_of_week="sat")
    assert runs(first_saturday, at(2026, 1, 1), 3) == [
        "2026-01-03 22:00+0000", "2026-02-07 22:00+0000", "2026-03-07 22:00+0000"]


def test_month_ends_and_leap_days() -> None:
    on_the_31st = crontab(minute=0, hour=0, day_of_month=31)
    assert runs(on_the_31st, at(2026, 1, 31), 3) == [
        "2026-03-31 00:00+0000", "2026-05-31 00:00+0000", "2026-07-31 00:00+0000"]
    leap_day = crontab(minute=0, hour=12, day_of_month=29, month_of_year=2)
    assert runs(leap_day, at(2026, 1, 1), 2) == ["2028-02-29 12:00+0000", "2032-02-29 12:00+0000"]
    new_year = crontab(minute=59, hour=23, day_of_month=31, month_of_year=12)
    assert runs(new_year, at(2026, 12, 31, 23, 59), 1) == ["2027-12-31 23:59+0000"]


def test_spring_forward_runs_a_skipped_time_once_after_the_change() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29: 02:30 runs at 03:30 summer time.
    daily = crontab(minute=30, hour=2)
    assert runs(daily, at(2026, 3, 27, 12), 3, BERLIN) == [
        "2026-03-28 02:30+0100", "2026-03-29 03:30+0200", "2026-03-30 02:30+0200"]
    # A half-hourly job simply has no 02:xx runs that night; nothing is sent twice.
    half_hourly = crontab(minute="*/30")
    assert runs(half_hourly, at(2026, 3, 29, 1, 10, tz=BERLIN), 3, BERLIN) == [
        "2026-03-29 01:30+0100", "2026-03-29 03:00+0200", "2026-03-29 03:30+0200"]


def test_fall_back_runs_a_daily_job_once_and_an_hourly_job_in_both_passes() -> None:
    # Europe/Berlin shows 02:00-03:00 twice on 2026-10-25.
    daily = crontab(minute=30, hour=2)
    assert runs(daily, at(2026, 10, 23, 12), 3, BERLIN) == [
        "2026-10-24 02:30+0200", "2026-10-25 02:30+0200", "2026-10-26 02:30+0100"]
    hourly = crontab(minute=30)
    assert runs(hourly, at(2026, 10, 25, 0, 0, tz=BERLIN), 4, BERLIN) == [
        "2026-10-25 00:30+0200", "2026-10-25 01:30+0200", "2026-10-25 02:30+0200",
        "2026-10-25 02:30+0100"]
    # New York repeats 01:00-02:00 on 2026-11-01.
    assert runs(crontab(minute=15, hour=1), at(2026, 10, 31, 12), 2, NEW_YORK) == [
        "2026-11-01 01:15-0400", "2026-11-02 01:15-0500"]


def test_latest_collapses_missed_runs_into_the_last_one() -> None:
    quarter = crontab(minute="*/15")
    assert quarter.latest(at(2026, 1, 1, 9, 0), at(2026, 1, 1, 10, 7), UTC) == at(2026, 1, 1, 10)
    assert quarter.latest(at(2026, 1, 1, 9, 0), at(2026, 1, 1, 10, 15), UTC) == at(
        2026, 1, 1, 10, 15)
    # During the repeated hour, "latest" is read in real time, not on the wall clock.
    now = at(2026, 10, 25, 1, 50)  # 02:50 winter time, after the second 02:30
    assert crontab(minute=30).latest(now, now, BERLIN) == at(2026, 10, 25, 1, 30)
    every_10s = schedule(datetime.timedelta(seconds=10))
    assert every_10s.latest(at(2026, 1, 1), at(2026, 1, 1, 0, 1, 5), UTC) == at(2026, 1, 1, 0, 1)


def test_invalid_fields_are_reported_not_raised_on_construction() -> None:
    assert crontab(minute=60).errors() == {"minute": "'60' is out of range for minute"}
    assert "not a crontab pattern" in crontab(day_of_week="funday").errors()["day_of_week"]
    assert "not a crontab pattern" in crontab(day_of_month="L").errors()["day_of_month"]
    assert "never matches" in crontab(day_of_month=30, month_of_year=2).errors()["__all__"]
    assert crontab(minute="0-59/5", hour="0,8-17/2", month_of_year="jan-mar").errors() == {}
    with pytest.raises(ValueError, match="out of range"):
        crontab(hour=24).following(at(2026, 1, 1), UTC)


def test_maybe_schedule() -> None:
    assert maybe_schedule(30) == schedule(datetime.timedelta(seconds=30))
    assert maybe_schedule(datetime.timedelta(minutes=1)).run_every.total_seconds() == 60
    for bad in (0, -1, "30", None, True):
        with pytest.raises((TypeError, ValueError)):
            maybe_schedule(bad)
