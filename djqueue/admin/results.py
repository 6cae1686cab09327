"""Task results in the admin: state, outcome, pretty traceback; actions retry and forget."""

from __future__ import annotations

import ast
from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest
from django.utils.safestring import SafeString

from ..client.base import app
from ..models import TaskResult
from ..serialization import loads
from .base import SEARCH_HELP, ReadOnlyAdmin, distinct_filter, duration, preformatted


def call_arguments(result: TaskResult) -> tuple[list[Any], dict[str, Any]]:
    """The arguments a result was stored with, when they are plain literals (the result keeps
    their ``repr``); raises ValueError otherwise."""
    if result.args.endswith("...") or result.kwargs.endswith("..."):
        raise ValueError("its arguments were too long to store in full")
    try:
        args = ast.literal_eval(result.args or "()")
        kwargs = ast.literal_eval(result.kwargs or "{}")
    except (ValueError, SyntaxError):
        raise ValueError("its arguments are not plain literals") from None
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise ValueError("its arguments are not a list and a dict")
    return list(args), kwargs


@admin.register(TaskResult)
class TaskResultAdmin(ReadOnlyAdmin):
    list_display = ("task_name", "task_id", "state", "queue", "took", "worker", "date_done")
    list_filter = ("state", distinct_filter("task_name", "task name"))
    search_fields = ("^task_id", "^task_name")  # prefixes, see ReadOnlyAdmin
    search_help_text = SEARCH_HELP
    sortable_by = ("date_done",)
    ordering = ("-id",)
    actions = ("retry_selected", "forget_selected")
    readonly_fields = ("took", "outcome", "pretty_traceback")
    fields = ("task_id", "task_name", "state", "queue", "worker", "workers", "took", "date_created",
              "date_done", "args", "kwargs", "outcome", "pretty_traceback")

    @admin.display(description="runtime")
    def took(self, obj: TaskResult) -> str:
        return duration(obj.runtime)

    @admin.display(description="result")
    def outcome(self, obj: TaskResult) -> SafeString:
        if obj.result is None:
            return preformatted("")
        try:
            text = repr(loads(obj.result, obj.content_type, ["json"]))
        except Exception as exc:  # noqa: BLE001 - shown as text, whatever is wrong with it
            text = f"(not decoded: {exc})"
        return preformatted(text)

    @admin.display(description="traceback")
    def pretty_traceback(self, obj: TaskResult) -> SafeString:
        return preformatted(obj.traceback)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "add_message")

    def has_forget_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "delete_taskresult")

    @admin.action(description="Retry: enqueue the selected tasks again with the same arguments",
                  permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        sent = []
        for result in queryset:
            try:
                args, kwargs = call_arguments(result)
            except ValueError as exc:
                self.message_user(request, f"Cannot re-enqueue {result.task_id}: {exc}.",
                                  messages.ERROR)
                continue
            sent.append(app.send_task(result.task_name, args, kwargs, queue=result.queue or None).id)
        if sent:
            self.message_user(request, f"Enqueued {len(sent)} task(s) again: {', '.join(sent)}")

    @admin.action(description="Forget the selected results", permissions=["forget"])
    def forget_selected(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        count, _ = queryset.delete()
        self.message_user(request, f"Forgot {count} result(s).")
