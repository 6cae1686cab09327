"""System checks for the observability settings: events (``CELERY_SEND_EVENTS``,
``DJQUEUE_EVENTS_EXPIRES``) and the log format (``DJQUEUE_LOG_FORMAT``). Registered by
``apps.ready()``, as :mod:`djqueue.checks` is."""

from __future__ import annotations

from typing import Any

from django.core import checks

from ..client.base import app

LOG_FORMATS = ("text", "json")


@checks.register("djqueue")
def check_observability(**kwargs: Any) -> list[checks.CheckMessage]:
    """E040: DJQUEUE_LOG_FORMAT unknown. E041: CELERY_SEND_EVENTS not a boolean.
    E042: DJQUEUE_EVENTS_EXPIRES not a positive number of seconds."""
    conf, messages = app.conf, []
    if conf.DJQUEUE_LOG_FORMAT not in LOG_FORMATS:
        messages.append(checks.Error(
            f"DJQUEUE_LOG_FORMAT = {conf.DJQUEUE_LOG_FORMAT!r} is not a log format djqueue has.",
            hint="Use 'text' (Celery's lines) or 'json' (one JSON object a line).",
            id="djqueue.E040",
        ))
    if not isinstance(conf.CELERY_SEND_EVENTS, bool):
        messages.append(checks.Error(
            f"CELERY_SEND_EVENTS = {conf.CELERY_SEND_EVENTS!r} is not True or False.",
            hint="Set it to True for workers to write events (as `celery worker -E` does).",
            id="djqueue.E041",
        ))
    expires = conf.DJQUEUE_EVENTS_EXPIRES
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not expires > 0:
        messages.append(checks.Error(
            f"DJQUEUE_EVENTS_EXPIRES = {expires!r} is not a positive number of seconds.",
            hint="Give how many seconds workers keep events, e.g. 3600.",
            id="djqueue.E042",
        ))
    return messages
