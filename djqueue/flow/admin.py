"""The admin of flow control: rate-limit overrides (with the way back to the configured limit)
and paused queues (pause one by adding it, resume by the action). Both tell the running workers
at once, as ``celery control`` does."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ..admin.base import ReadOnlyAdmin
from ..client import identifiers
from ..client.base import app
from ..client.rates import task_rate
from ..models import RateLimitOverride
from .models import PausedQueue


@admin.register(RateLimitOverride)
class RateLimitOverrideAdmin(ReadOnlyAdmin):
    list_display = ("task_name", "override", "configured", "updated_at")
    ordering = ("task_name",)
    actions = ("reset_selected",)

    @admin.display(description="rate limit in force")
    def override(self, obj: RateLimitOverride) -> str:
        return "no limit" if obj.rate_limit in ("", "0") else obj.rate_limit

    @admin.display(description="configured")
    def configured(self, obj: RateLimitOverride) -> str:
        task = app.tasks.get(obj.task_name)
        if task is None:
            return "(task not registered here)"
        return str(task_rate(task) or "no limit")

    def has_reset_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "delete_ratelimitoverride")

    @admin.action(description="Return to the configured rate limit", permissions=["reset"])
    def reset_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        names = sorted(queryset.values_list("task_name", flat=True))
        for name in names:
            app.control.reset_rate_limit(name)
        self.message_user(request, f"Back to the configured rate limit: {', '.join(names)}")


class PauseForm(forms.ModelForm):
    class Meta:
        model = PausedQueue
        fields = ("queue",)

    def clean_queue(self) -> str:
        try:
            return identifiers.check("queue name", self.cleaned_data["queue"], identifiers.MAX_QUEUE)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(PausedQueue)
class PausedQueueAdmin(ReadOnlyAdmin):
    """Adding a row pauses its queue for every worker; the action resumes."""

    form = PauseForm
    list_display = ("queue", "paused_at")
    ordering = ("queue",)
    actions = ("resume_selected",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "add_pausedqueue")

    def save_model(self, request: HttpRequest, obj: PausedQueue, form: Any, change: bool) -> None:
        app.control.pause_queue(obj.queue)  # stores the row and tells the running workers
        obj.pk = PausedQueue.objects.get(queue=obj.queue).pk

    def has_resume_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "delete_pausedqueue")

    @admin.action(description="Resume the selected queues", permissions=["resume"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        queues = sorted(queryset.values_list("queue", flat=True))
        for queue in queues:
            app.control.resume_queue(queue)
        self.message_user(request, f"Resumed: {', '.join(queues)}")
