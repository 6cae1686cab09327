"""``celery events``: the event stream workers write with ``-E`` (``CELERY_SEND_EVENTS``).

``--dump`` prints each event as it arrives, one line each, as Celery's dumper does
(``<worker> [<time>] task succeeded: tasks.add(<id>) result=4, runtime=0.0012``). Without it, a
plain table of the workers and the latest tasks, redrawn every ``--interval`` seconds. The source
is the ``djqueue_event`` table, read by id (``--since`` replays the last seconds first); no
second server is involved.
"""

from __future__ import annotations

import datetime
import time
from argparse import ArgumentParser
from collections.abc import Iterable
from typing import Any, TextIO

from django.db.models import Max
from django.utils import timezone

from ..client.base import app
from ..events.models import Event
from .arguments import positive_seconds

HELP = "Show the event stream of workers started with -E (CELERY_SEND_EVENTS)."

#: Fields the dump leaves out of a line: already in it, or noise.
_HIDDEN = frozenset(("pid", "sw_ident", "sw_ver", "sw_sys", "freq"))
#: Task states the table shows, by event type.
_STATES = {
    "task-received": "RECEIVED", "task-started": "STARTED", "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE", "task-retried": "RETRY", "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}
TABLE_TASKS = 20


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("-d", "--dump", action="store_true",
                        help="Print every event as it arrives, one line each.")
    parser.add_argument("--interval", type=positive_seconds, default=0.5,
                        help="Seconds between reads of the event table (default 0.5).")
    parser.add_argument("--since", type=positive_seconds, default=None,
                        help="First show the events of the last SINCE seconds.")
    parser.add_argument("--once", action="store_true",
                        help="Show what is stored (see --since) and exit instead of following.")


def _one_line(value: object) -> str:
    """A field's text with its line breaks escaped (a traceback), so an event stays a line."""
    return str(value).rstrip("\n").replace("\n", "\\n")


def describe(event: Event) -> str:
    """One dump line."""
    stamp = timezone.localtime(event.timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    data = event.data()
    if event.type == "task-received":  # Celery shows the call first
        data = {"args": data.pop("args", "[]"), "kwargs": data.pop("kwargs", "{}"), **data}
    fields = ", ".join(f"{key}={_one_line(value)}" for key, value in data.items()
                       if key not in _HIDDEN and value not in (None, ""))
    subject = f" {event.task_name}({event.task_id})" if event.task_id else ""
    return f"{event.hostname} [{stamp}] {event.type.replace('-', ' ')}:{subject} {fields}".rstrip()


def table(events: Iterable[Event], now: datetime.datetime) -> str:
    """The workers (last event of each) and the latest tasks (state by their last event)."""
    workers: dict[str, Event] = {}
    tasks: dict[str, Event] = {}
    for event in events:
        if event.task_id:
            tasks.pop(event.task_id, None)
            tasks[event.task_id] = event
        else:
            workers[event.hostname] = event
    lines = [f"{'WORKER':<40} {'STATUS':<8} {'ACTIVE':>6} {'PROCESSED':>9}  LAST SEEN"]
    for hostname, event in sorted(workers.items()):
        data = event.data()
        status = "offline" if event.type == "worker-offline" else "online"
        age = (now - event.timestamp).total_seconds()
        lines.append(f"{hostname:<40} {status:<8} {data.get('active', 0):>6} "
                     f"{data.get('processed', 0):>9}  {age:.0f}s ago")
    lines.append("")
    lines.append(f"{'TASK ID':<36}  {'NAME':<30} {'STATE':<9} WORKER")
    for event in list(tasks.values())[-TABLE_TASKS:][::-1]:
        lines.append(f"{event.task_id:<36}  {event.task_name[:30]:<30} "
                     f"{_STATES.get(event.type, event.type):<9} {event.hostname}")
    return "\n".join(lines) + "\n"


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    using = app.conf.broker_alias
    events = Event.objects.using(using)
    if not events.exists():
        stderr.write("No events yet: workers write them only when started with -E (or with "
                     "CELERY_SEND_EVENTS = True).\n")
    if options["since"] is not None:
        cutoff = timezone.now() - datetime.timedelta(seconds=options["since"])
        last = (events.filter(timestamp__lt=cutoff).aggregate(last=Max("id"))["last"] or 0)
    else:
        last = events.aggregate(last=Max("id"))["last"] or 0
    window: list[Event] = []
    while True:
        new = list(events.filter(id__gt=last).order_by("id")[:1000])
        if new:
            last = new[-1].id
        if options["dump"]:
            for event in new:
                stdout.write(describe(event) + "\n")
        else:
            window = (window + new)[-5000:]
            if new or not window:
                stdout.write("\x1b[2J\x1b[H" if stdout.isatty() else "\n")
                stdout.write(table(window, timezone.now()))
        stdout.flush()
        if options["once"] and len(new) < 1000:
            return 0
        if len(new) < 1000:
            time.sleep(options["interval"])
