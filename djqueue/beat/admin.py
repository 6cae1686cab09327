"""The Django admin for periodic tasks (edited here) and the runs beat sent (read-only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from ..admin.base import ReadOnlyAdmin
from ..client.base import app
from .models import PeriodicTask, PeriodicTaskRun, schedule_changed
from .sync import DEFINED_FIELDS


class PeriodicTaskForm(forms.ModelForm):
    class Meta:
        model = PeriodicTask
        fields = "__all__"

    def clean_task(self) -> str:
        name = self.cleaned_data["task"]
        if name not in app.tasks:
            raise ValidationError(
                f"No task named {name!r} is registered: check the name, or list its module in "
                "CELERY_IMPORTS."
            )
        return name


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):
    form = PeriodicTaskForm
    list_display = ("name", "task", "schedule_text", "enabled", "one_off", "last_run_at",
                    "total_run_count", "from_settings")
    list_filter = ("enabled", "kind", "one_off", "from_settings")
    search_fields = ("name", "task")
    actions = ("enable", "disable")
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description")}),
        ("Schedule", {
            "fields": ("kind", "interval_seconds",
                       ("crontab_minute", "crontab_hour", "crontab_day_of_week",
                        "crontab_day_of_month", "crontab_month_of_year"),
                       "start_time", "one_off"),
            "description": "An interval (seconds between runs) or a crontab, read in "
                           "CELERY_TIMEZONE (UTC by default).",
        }),
        ("Arguments", {"fields": ("args", "kwargs")}),
        ("Execution options", {"fields": ("queue", "priority", "expires")}),
        ("Runs", {"fields": ("last_run_at", "total_run_count", "from_settings", "created_at",
                             "date_changed")}),
    )

    @admin.display(description="schedule")
    def schedule_text(self, obj: PeriodicTask) -> str:
        return obj.schedule_text()

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fixed = ("last_run_at", "total_run_count", "from_settings", "created_at", "date_changed")
        if obj is not None and obj.from_settings:
            return ("name", *DEFINED_FIELDS, *fixed)  # CELERYBEAT_SCHEDULE would overwrite them
        return fixed

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
        count = queryset.update(enabled=enabled)
        schedule_changed(queryset.db)
        verb = "enabled" if enabled else "disabled"
        self.message_user(request, f"{count} periodic task(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Enable selected periodic tasks")
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected periodic tasks")
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, False)


@admin.register(PeriodicTaskRun)
class PeriodicTaskRunAdmin(ReadOnlyAdmin):
    list_display = ("periodic_task", "scheduled_at", "task_id", "sent_at")
    list_filter = ("periodic_task",)
    search_fields = ("=task_id",)
    ordering = ("-scheduled_at",)
