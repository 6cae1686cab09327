"""``CELERYBEAT_SCHEDULE``: reading its entries, and keeping the periodic-task rows in step.

An entry is Celery's ``{"task": ..., "schedule": ..., "args": ..., "kwargs": ..., "options":
{...}}``. It becomes the fields of a :class:`PeriodicTask`, which are validated like a row saved in
the admin; the system checks report the problems (``djqueue.E1xx``) and beat syncs only valid
entries.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from .models import PeriodicTask, schedule_fields
from ..schedules import maybe_schedule

logger = logging.getLogger("djqueue.beat")

ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options")
OPTION_KEYS = ("queue", "priority", "expires")
#: Fields a settings entry defines; the rest (enabled, last run, counts) belong to the database.
DEFINED_FIELDS = (
    "task", "kind", "interval_seconds", "crontab_minute", "crontab_hour", "crontab_day_of_week",
    "crontab_day_of_month", "crontab_month_of_year", "args", "kwargs", "queue", "priority",
    "expires",
)


class EntryError(ValueError):
    """A ``CELERYBEAT_SCHEDULE`` entry that cannot be used, with every reason."""

    def __init__(self, name: str, problems: list[str]) -> None:
        super().__init__(f"CELERYBEAT_SCHEDULE[{name!r}]: " + "; ".join(problems))
        self.problems = problems


def entry_fields(name: str, entry: Any) -> dict[str, Any]:
    """The :class:`PeriodicTask` fields for one entry; raises :class:`EntryError`."""
    if not isinstance(entry, Mapping):
        raise EntryError(name, [f"must be a dict with 'task' and 'schedule', not {entry!r}"])
    problems = []
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(map(repr, unknown))}; "
                        f"an entry has {', '.join(ENTRY_KEYS)}")
    task = entry.get("task")
    if not isinstance(task, str) or not task:
        problems.append(f"'task' must be a task name, not {task!r}")
    fields: dict[str, Any] = {"name": name, "task": task}
    try:
        fields.update(schedule_fields(maybe_schedule(entry.get("schedule"))))
    except (TypeError, ValueError) as exc:
        problems.append(f"'schedule' must be a timedelta, seconds, schedule() or crontab(): {exc}")
    args, kwargs = entry.get("args", ()), entry.get("kwargs", {})
    if not isinstance(args, (list, tuple)):
        problems.append(f"'args' must be a list or tuple, not {args!r}")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        problems.append(f"'kwargs' must be a dict with string keys, not {kwargs!r}")
    options = entry.get("options", {})
    if not isinstance(options, Mapping):
        problems.append(f"'options' must be a dict, not {options!r}")
        options = {}
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        problems.append(f"unsupported option(s) {', '.join(map(repr, unknown))}; "
                        f"beat supports {', '.join(OPTION_KEYS)}")
    expires = options.get("expires")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, numbers.Real)):
        problems.append(f"options 'expires' must be seconds, not {expires!r}")
    if problems:
        raise EntryError(name, problems)
    fields.update(
        args=list(args), kwargs=dict(kwargs), queue=options.get("queue") or "",
        priority=options.get("priority"), expires=expires,
    )
    row = PeriodicTask(**fields)
    try:
        row.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise EntryError(name, [f"{field}: {' '.join(messages)}" if field != "__all__"
                                else " ".join(messages)
                                for field, messages in exc.message_dict.items()]) from exc
    return fields


def sync_from_settings(schedule: Mapping[str, Any], using: str) -> None:
    """Make the rows match ``CELERYBEAT_SCHEDULE``: create and update its entries (keeping their
    enabled flag, last run and count), delete rows of entries no longer in it."""
    wanted = {name: entry_fields(name, entry) for name, entry in schedule.items()}
    rows = PeriodicTask.objects.using(using)
    with transaction.atomic(using=using):
        existing = {row.name: row for row in rows.filter(name__in=list(wanted))}
        for name, fields in wanted.items():
            row = existing.get(name)
            if row is None:
                rows.create(from_settings=True, **fields)
                logger.info("beat: Added %s from CELERYBEAT_SCHEDULE", name)
                continue
            changed = [f for f in DEFINED_FIELDS if getattr(row, f) != fields[f]]
            if changed or not row.from_settings:
                for field in changed:
                    setattr(row, field, fields[field])
                row.from_settings = True
                row.save(using=using)
                logger.info("beat: Updated %s from CELERYBEAT_SCHEDULE", name)
        for row in rows.filter(from_settings=True).exclude(name__in=list(wanted)):
            row.delete(using=using)
            logger.info("beat: Removed %s: no longer in CELERYBEAT_SCHEDULE", row.name)
