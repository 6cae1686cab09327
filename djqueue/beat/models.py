"""Periodic tasks in the database: the entries, the runs sent, and the scheduler's shared state.

``models.py`` imports these so Django finds them.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from ..schedules import CRON_FIELDS, crontab, schedule

STATE_ID = 1


class PeriodicTask(models.Model):
    """One entry of the schedule: which task to send, when, and with what."""

    class Kind(models.TextChoices):
        INTERVAL = "interval", "interval"
        CRONTAB = "crontab", "crontab"

    name = models.CharField(max_length=200, unique=True, help_text="Unique name of this entry.")
    task = models.CharField(max_length=255, help_text="Name of the task to send, e.g. tasks.add.")
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(
        "schedule", max_length=8, choices=Kind.choices, default=Kind.INTERVAL
    )
    interval_seconds = models.FloatField(
        "every (seconds)", null=True, blank=True, validators=[MinValueValidator(0.001)],
        help_text="For an interval schedule: seconds between runs.",
    )
    crontab_minute = models.CharField("minute", max_length=200, default="*")
    crontab_hour = models.CharField("hour", max_length=200, default="*")
    crontab_day_of_week = models.CharField(
        "day of week", max_length=200, default="*", help_text="0–6 (Sunday is 0) or sun–sat."
    )
    crontab_day_of_month = models.CharField("day of month", max_length=200, default="*")
    crontab_month_of_year = models.CharField("month of year", max_length=200, default="*")
    start_time = models.DateTimeField(
        "start time", null=True, blank=True,
        help_text="No run before this time; an interval schedule has its first run then.",
    )
    one_off = models.BooleanField(
        "one-off", default=False, help_text="Run once, then disable this entry."
    )
    args = models.JSONField(default=list, blank=True, help_text='JSON array, e.g. [16, 16].')
    kwargs = models.JSONField(default=dict, blank=True, help_text='JSON object, e.g. {"x": 1}.')
    queue = models.CharField(
        max_length=200, blank=True, default="", help_text="Empty: the task's usual routing."
    )
    priority = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(255)], help_text="0–255."
    )
    expires = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001)],
        help_text="Seconds after sending; a run not started by then is discarded (REVOKED).",
    )
    last_run_at = models.DateTimeField(
        "last run at", null=True, blank=True,
        help_text="Scheduled time of the last run sent.",
    )
    total_run_count = models.PositiveIntegerField("total run count", default=0)
    from_settings = models.BooleanField(
        "from settings", default=False,
        help_text="Defined in CELERYBEAT_SCHEDULE: the settings own its definition.",
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)
    date_changed = models.DateTimeField("changed", auto_now=True)

    class Meta:
        db_table = "djqueue_periodictask"
        verbose_name = "periodic task"
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name}: {self.schedule_text()}"

    @property
    def schedule(self) -> schedule | crontab:
        if self.kind == self.Kind.CRONTAB:
            return crontab(**{name: getattr(self, f"crontab_{name}") for name in CRON_FIELDS})
        return schedule(datetime.timedelta(seconds=self.interval_seconds or 0))

    def schedule_text(self) -> str:
        if self.kind == self.Kind.CRONTAB:
            return self.schedule.expression + " (m h dM MY dW)"
        return f"every {self.interval_seconds:g} seconds" if self.interval_seconds else "-"

    def next_run(self, tz: datetime.tzinfo) -> datetime.datetime:
        """The first run time after the last run; for a new entry, at its start time or one period
        after it was created."""
        when = self.schedule
        if self.last_run_at is not None:
            return when.following(self.last_run_at, tz)
        if self.start_time is not None:
            return when.at_or_after(self.start_time, tz)
        return when.following(self.created_at, tz)

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        if self.kind == self.Kind.INTERVAL and not self.interval_seconds:
            errors["interval_seconds"] = "An interval schedule needs the seconds between runs."
        if self.kind == self.Kind.CRONTAB:
            for field, message in self.schedule.errors().items():
                errors["__all__" if field == "__all__" else f"crontab_{field}"] = message
        if not isinstance(self.args, list):
            errors["args"] = "Positional arguments must be a JSON array, e.g. [1, 2]."
        if not isinstance(self.kwargs, dict):
            errors["kwargs"] = 'Keyword arguments must be a JSON object, e.g. {"x": 1}.'
        if errors:
            raise ValidationError(errors)


def schedule_fields(when: schedule | crontab) -> dict[str, Any]:
    """The :class:`PeriodicTask` fields that describe ``when``."""
    if isinstance(when, crontab):
        return {"kind": PeriodicTask.Kind.CRONTAB, "interval_seconds": None,
                **{f"crontab_{name}": text for name, text in when.fields().items()}}
    return {"kind": PeriodicTask.Kind.INTERVAL,
            "interval_seconds": when.run_every.total_seconds(),
            **{f"crontab_{name}": "*" for name in CRON_FIELDS}}


class PeriodicTaskRun(models.Model):
    """A run beat sent. The unique (entry, scheduled time) pair is what keeps two schedulers
    from sending the same run twice: it is inserted in the transaction that enqueues the task."""

    periodic_task = models.ForeignKey(
        PeriodicTask, on_delete=models.CASCADE, related_name="runs", verbose_name="periodic task"
    )
    scheduled_at = models.DateTimeField("scheduled at")
    task_id = models.CharField("task id", max_length=255)
    sent_at = models.DateTimeField("sent at", auto_now_add=True)

    class Meta:
        db_table = "djqueue_periodictaskrun"
        verbose_name = "periodic task run"
        constraints = [
            models.UniqueConstraint(
                fields=["periodic_task", "scheduled_at"], name="djqueue_periodic_run_once"
            )
        ]
        indexes = [models.Index(fields=["scheduled_at"], name="djqueue_run_scheduled")]

    def __str__(self) -> str:
        return f"{self.periodic_task_id} at {self.scheduled_at.isoformat()}"


class BeatState(models.Model):
    """One row shared by every beat process: who is the active scheduler, until when, and a
    counter bumped by every change to the periodic tasks so a running beat reloads cheaply."""

    leader = models.CharField(max_length=255, blank=True, default="")
    lease_until = models.DateTimeField("lease until", null=True, blank=True)
    version = models.BigIntegerField(default=0)

    class Meta:
        db_table = "djqueue_beatstate"
        verbose_name = "beat state"


def schedule_changed(using: str = "default") -> None:
    """Tell running schedulers to reload the periodic tasks.

    Saving or deleting a :class:`PeriodicTask` calls this; call it yourself after changing rows
    with ``QuerySet.update()``.
    """
    if not BeatState.objects.using(using).filter(pk=STATE_ID).update(version=F("version") + 1):
        BeatState.objects.using(using).bulk_create(
            [BeatState(pk=STATE_ID, version=1)], ignore_conflicts=True
        )


@receiver([post_save, post_delete], sender=PeriodicTask, dispatch_uid="djqueue_beat_changed")
def _periodic_task_changed(sender: type, instance: PeriodicTask, using: str, **kw: Any) -> None:
    schedule_changed(using)
