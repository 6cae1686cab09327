"""What the djqueue model admins share: read-only pages, capped counts, cheap list filters."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import models
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..broker.monitor import capped_count, distinct_values


class CappedPaginator(Paginator):
    """Counts at most ``COUNT_CAP + 1`` rows, so a page of a million-row table stays cheap."""

    @cached_property
    def count(self) -> int:
        return capped_count(self.object_list)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows are written by djqueue only; the admin shows them and offers actions."""

    show_full_result_count = False
    paginator = CappedPaginator
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting happens through the named actions, with their own permission

    def get_search_results(self, request: HttpRequest, queryset: models.QuerySet,
                           search_term: str) -> tuple[models.QuerySet, bool]:
        """Exact, case-sensitive matches on ``search_fields``: Django's ``=field`` search compares
        ``UPPER(field)``, which no index answers, so a search would read the whole table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        match = models.Q()
        for name in self.search_fields:
            match |= models.Q(**{name.lstrip("=^@"): term})
        return queryset.filter(match), False

    def _perm(self, request: HttpRequest, codename: str) -> bool:
        return request.user.has_perm(f"djqueue.{codename}")


def distinct_filter(column: str, label: str) -> type[admin.SimpleListFilter]:
    """A list filter whose choices come from a loose index scan instead of ``SELECT DISTINCT``."""

    class DistinctValuesFilter(admin.SimpleListFilter):
        title = label
        parameter_name = column

        def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
            model = model_admin.model
            return [(value, value) for value in distinct_values(model, column)]

        def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
            value = self.value()
            return queryset.filter(**{column: value}) if value else queryset

    return DistinctValuesFilter


def preformatted(text: str | None) -> SafeString:
    """User data in a ``<pre>`` block, escaped."""
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text or "")
