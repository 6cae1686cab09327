"""Messages in the admin (waiting, scheduled, held, set aside) and the overview page."""

from __future__ import annotations


from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from ..broker import monitor, operations
from ..client import revocation
from ..client.base import app
from ..models import Message
from ..serialization import loads
from .base import SEARCH_HELP, ReadOnlyAdmin, distinct_filter, preformatted
from .overview import overview_context


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("waiting", "waiting"), ("scheduled", "scheduled (eta/countdown)"),
                ("reserved", "reserved"), ("started", "running"), ("rejected", "set aside")]

    def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        value, now = self.value(), timezone.now()
        if value == "waiting":
            return queryset.filter(state=Message.State.READY, available_at__lte=now)
        if value == "scheduled":
            return queryset.filter(state=Message.State.READY, available_at__gt=now)
        if value in {"reserved", "started", "rejected"}:
            return queryset.filter(state=value)
        return queryset


def describe_status(message: Message) -> str:
    if message.state == Message.State.READY:
        return "scheduled" if message.available_at > timezone.now() else "waiting"
    return {"started": "running", "rejected": "set aside"}.get(message.state, message.state)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("task_name", "task_id", "queue", "priority", "status", "available_at", "age",
                    "worker")
    # The message table's queue indexes are partial (one per state): monitor.queue_names probes
    # each, where a scan of the column would read the whole table at every probe.
    list_filter = (StatusFilter,
                   distinct_filter("queue", "queue", lambda model: monitor.queue_names(
                       app.conf.broker_alias)),
                   distinct_filter("task_name", "task name"))
    search_fields = ("^task_id", "^task_name")  # prefixes, see ReadOnlyAdmin
    search_help_text = SEARCH_HELP
    sortable_by = ("available_at", "priority")
    ordering = ("-id",)
    actions = ("revoke_selected", "purge_selected", "restore_selected")
    readonly_fields = ("status", "arguments", "age")
    fields = ("task_id", "task_name", "queue", "priority", "status", "available_at", "expires",
              "age", "arguments", "retries", "worker", "started_at", "lease_until", "acks_late",
              "time_limit", "soft_time_limit", "error", "content_type")

    @admin.display(description="status")
    def status(self, obj: Message) -> str:
        return describe_status(obj)

    @admin.display(description="age")
    def age(self, obj: Message) -> str:
        return timesince(obj.created_at)

    @admin.display(description="arguments")
    def arguments(self, obj: Message) -> SafeString:
        # Only JSON is decoded here: unpickling in the web process would run arbitrary code.
        try:
            payload = loads(obj.body, obj.content_type, ["json"])
            text = f"args: {payload.get('args')!r}\nkwargs: {payload.get('kwargs')!r}"
        except Exception as exc:  # noqa: BLE001 - shown as text, whatever is wrong with the body
            text = f"(not decoded: {exc})"
        return preformatted(text)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "add_revocation")

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "delete_message")

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "change_message")

    @admin.action(description="Revoke the selected tasks", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        ids = revocation.revoke(list(queryset.values_list("task_id", flat=True)),
                                using=app.conf.broker_alias)
        self.message_user(request, f"Revoked {len(ids)} task(s); workers will not run them.")

    @admin.action(description="Purge the selected waiting messages", permissions=["purge"])
    def purge_selected(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        # Messages a worker holds are left alone: revoke those instead.
        count, _ = queryset.filter(state__in=[Message.State.READY, Message.State.REJECTED]).delete()
        self.message_user(request, f"Purged {count} message(s).")

    @admin.action(description="Re-enqueue the selected set-aside messages", permissions=["restore"])
    def restore_selected(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        ids = list(queryset.filter(state=Message.State.REJECTED).values_list("id", flat=True))
        count = operations(app.conf.broker_alias).restore_rejected(ids)
        level = messages.SUCCESS if count else messages.WARNING
        self.message_user(request, f"Re-enqueued {count} set-aside message(s).", level)

    # The overview page.

    def get_urls(self) -> list[URLPattern]:
        overview = path("overview/", self.admin_site.admin_view(self.overview_view),
                        name="djqueue_overview")
        return [overview, *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Task queue overview",
            "opts": self.model._meta,
            **overview_context(request.GET.get("refresh")),
        }
        return TemplateResponse(request, "admin/djqueue/overview.html", context)
