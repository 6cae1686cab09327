"""What the djqueue model admins share: read-only pages, capped counts, cheap list filters."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import models
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..broker.monitor import capped_count, distinct_values


SEARCH_HELP = ("A task id, or its first characters; or a task name, or its start "
               "(\"tasks.\"). Case-sensitive.")


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
        """Case-sensitive matches on ``search_fields``: whole values, or values that start with
        the term for fields written ``^field``. Django's own search compares ``UPPER(field)``,
        which no index answers, so a search would read the whole table; a prefix here is a range
        of the field's index (``term <= field < term'``, ``term'`` the term with its last
        character's successor), which every database answers from its index."""
        term = search_term.strip()
        if not term:
            return queryset, False
        match = models.Q()
        for name in self.search_fields:
            field = name.lstrip("=^@")
            match |= prefix_match(field, term) if name.startswith("^") else models.Q(**{field: term})
        return queryset.filter(match), False

    def _perm(self, request: HttpRequest, codename: str) -> bool:
        return request.user.has_perm(f"djqueue.{codename}")


def prefix_match(field: str, prefix: str) -> models.Q:
    """Rows whose ``field`` starts with ``prefix``, as an index range (see above); the
    ``startswith`` keeps it exact where the column's collation orders differently."""
    match = models.Q(**{f"{field}__startswith": prefix})
    if ord(prefix[-1]) < sys.maxunicode:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        match &= models.Q(**{f"{field}__gte": prefix, f"{field}__lt": upper})
    return match


def duration(seconds: float | None) -> str:
    """A runtime for people: "0.4 µs", "1.2 ms", "250 ms", "3.4 s", "2 min 5 s", "1 h 3 min"."""
    if seconds is None:
        return "–"
    for unit, scale, limit in (("µs", 1e6, 1000), ("ms", 1e3, 1000), ("s", 1.0, 60)):
        value = seconds * scale
        value = round(value, 1 if value < 9.95 else None)
        if value < limit:
            return f"{value:g} {unit}"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def distinct_filter(column: str, label: str,
                    values: Callable[[type[models.Model]], list[str]] | None = None,
                    ) -> type[admin.SimpleListFilter]:
    """A list filter whose choices come from a loose index scan instead of ``SELECT DISTINCT``
    (or from ``values(model)``, where no index holds the whole column)."""

    class DistinctValuesFilter(admin.SimpleListFilter):
        title = label
        parameter_name = column

        def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
            model = model_admin.model
            found = values(model) if values else distinct_values(model, column)
            return [(value, value) for value in found]

        def queryset(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
            value = self.value()
            return queryset.filter(**{column: value}) if value else queryset

    return DistinctValuesFilter


def preformatted(text: str | None) -> SafeString:
    """User data in a ``<pre>`` block, escaped."""
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text or "")
