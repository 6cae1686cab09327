"""System checks for beat's settings (ids ``djqueue.E1xx``/``W1xx``)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from ..client.base import app
from .scheduler import DEFAULT_MAX_INTERVAL
from .sync import EntryError, entry_fields


def _seconds(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 0


@register("djqueue")
def check_beat_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    conf = app.conf
    messages: list[CheckMessage] = []
    schedule = conf.CELERYBEAT_SCHEDULE
    if not isinstance(schedule, Mapping):
        return [Error(f"CELERYBEAT_SCHEDULE must be a dict of entries, not {schedule!r}.",
                      id="djqueue.E101")]
    for name, entry in schedule.items():
        try:
            fields = entry_fields(str(name), entry)
        except EntryError as exc:
            messages.append(Error(str(exc), id="djqueue.E102",
                                  hint="See the README's section on periodic tasks."))
            continue
        if fields["task"] not in app.tasks:
            messages.append(Warning(
                f"CELERYBEAT_SCHEDULE[{name!r}] sends {fields['task']!r}, which is not a "
                "registered task here.",
                hint="Check the name, or list its module in CELERY_IMPORTS.", id="djqueue.W101",
            ))
    lease, loop = conf.DJQUEUE_BEAT_LEASE_SECONDS, conf.CELERYBEAT_MAX_LOOP_INTERVAL
    if not _seconds(lease) or not lease:
        messages.append(Error(f"DJQUEUE_BEAT_LEASE_SECONDS must be a positive number of seconds, "
                              f"not {lease!r}.", id="djqueue.E103"))
    elif not _seconds(loop):
        messages.append(Error(f"CELERYBEAT_MAX_LOOP_INTERVAL must be seconds (0: beat's default), "
                              f"not {loop!r}.", id="djqueue.E104"))
    elif lease < 3 * (loop or DEFAULT_MAX_INTERVAL):
        messages.append(Error(
            f"DJQUEUE_BEAT_LEASE_SECONDS ({lease}) must be at least 3 times "
            f"CELERYBEAT_MAX_LOOP_INTERVAL ({loop or DEFAULT_MAX_INTERVAL}): the active beat renews "
            "its lease once a loop, and must do so well before it runs out.", id="djqueue.E105"))
    return messages
