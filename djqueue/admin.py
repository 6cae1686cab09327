"""The Django admin: messages and results, read-only; periodic tasks in ``beat_admin``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Message, TaskResult


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows are written by djqueue only; the admin shows them."""

    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("task_name", "task_id", "queue", "priority", "state", "available_at",
                    "worker", "created_at")
    list_filter = ("state", "queue", "task_name")
    search_fields = ("=task_id",)
    ordering = ("-id",)


@admin.register(TaskResult)
class TaskResultAdmin(ReadOnlyAdmin):
    list_display = ("task_name", "task_id", "state", "runtime", "worker", "date_done")
    list_filter = ("state", "task_name")
    search_fields = ("=task_id",)
    ordering = ("-id",)


from . import beat_admin  # noqa: E402,F401 - beat's admin, which uses ReadOnlyAdmin
