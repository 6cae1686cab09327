"""Workers in the admin (alive or lost by heartbeat age); action shutdown. Also the rows that
remote control keeps: revocations (rate-limit overrides are in djqueue.flow.admin)."""

from __future__ import annotations

import datetime
import json

from django.contrib import admin
from django.db import models
from django.http import HttpRequest
from django.utils import timezone
from django.utils.timesince import timesince

from ..client.base import app
from ..models import Revocation, WorkerNode
from .base import ReadOnlyAdmin


def _lost_before() -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=float(app.conf.DJQUEUE_WORKER_LOST_TIMEOUT))


class AliveFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("alive", "alive"), ("lost", "lost"), ("stopped", "stopped")]

    def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        running = queryset.filter(stopped_at=None)
        if self.value() == "alive":
            return running.filter(lost_at=None, heartbeat_at__gte=_lost_before())
        if self.value() == "lost":
            return running.filter(models.Q(lost_at__isnull=False)
                                  | models.Q(heartbeat_at__lt=_lost_before()))
        if self.value() == "stopped":
            return queryset.exclude(stopped_at=None)
        return queryset


@admin.register(WorkerNode)
class WorkerNodeAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "pid", "status", "last_heartbeat", "queues", "pool", "concurrency",
                    "processed", "current_tasks", "started_at")
    list_filter = (AliveFilter,)
    search_fields = ("hostname",)
    sortable_by = ("started_at",)
    ordering = ("-id",)
    actions = ("shutdown_selected",)
    readonly_fields = ("status", "last_heartbeat", "current_tasks")

    def get_queryset(self, request: HttpRequest) -> models.QuerySet:
        """Without workers whose last heartbeat is older than ``DJQUEUE_WORKER_FORGET_AFTER``
        (running workers delete those rows too, but none may be running)."""
        forget_after = app.conf.DJQUEUE_WORKER_FORGET_AFTER
        queryset = super().get_queryset(request)
        if forget_after is None:
            return queryset
        return queryset.filter(
            heartbeat_at__gte=timezone.now() - datetime.timedelta(seconds=float(forget_after)))

    @admin.display(description="status")
    def status(self, obj: WorkerNode) -> str:
        if obj.stopped_at:
            return "stopped"
        return "lost" if obj.lost_at or obj.heartbeat_at < _lost_before() else "alive"

    @admin.display(description="last heartbeat")
    def last_heartbeat(self, obj: WorkerNode) -> str:
        return f"{timesince(obj.heartbeat_at)} ago"

    @admin.display(description="current tasks")
    def current_tasks(self, obj: WorkerNode) -> str:
        try:
            running = json.loads(obj.active or "[]")
        except ValueError:
            return obj.active
        return ", ".join(f"{t.get('name')}[{t.get('id')}]" for t in running) or "–"

    def has_shutdown_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "change_workernode")

    @admin.action(description="Shut down the selected workers (warm)", permissions=["shutdown"])
    def shutdown_selected(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        nodes = sorted(set(queryset.filter(stopped_at=None).values_list("hostname", flat=True)))
        if nodes:
            app.control.shutdown(destination=nodes)
        self.message_user(request, f"Asked {len(nodes)} node(s) to shut down: {', '.join(nodes)}")


@admin.register(Revocation)
class RevocationAdmin(ReadOnlyAdmin):
    list_display = ("task_id", "terminate", "signal", "created_at")
    search_fields = ("task_id",)
    ordering = ("-id",)

