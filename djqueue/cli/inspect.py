"""``celery inspect <method>``: ask the workers what they run, hold and know."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any, TextIO

from ..client.base import app
from .remote import add_remote_options, print_replies

HELP = "Inspect the workers."

METHODS = {
    "active": "Tasks running now.",
    "reserved": "Tasks claimed and waiting in a worker's buffer.",
    "scheduled": "Tasks of the workers' queues waiting for their eta/countdown.",
    "registered": "Registered task names.",
    "revoked": "Revoked task ids.",
    "stats": "Worker statistics.",
    "active_queues": "Queues each worker consumes.",
    "ping": "Ping the workers.",
    "conf": "The workers' settings (non-defaults; --with-defaults for all).",
    "query_task": "Where given task ids are held (active or reserved).",
    "clock": "Each worker's logical clock.",
    "report": "Versions and settings, for a bug report.",
}


def add_arguments(parser: ArgumentParser) -> None:
    methods = parser.add_subparsers(dest="inspect_method", metavar="method", required=True)
    for name, text in METHODS.items():
        sub = methods.add_parser(name, help=text)
        if name == "query_task":
            sub.add_argument("task_ids", nargs="+", metavar="task_id")
        if name == "registered":
            sub.add_argument("taskinfoitems", nargs="*", metavar="attribute",
                             help="Task attributes to show where set (default: rate_limit).")
        if name == "conf":
            sub.add_argument("--with-defaults", action="store_true")
        add_remote_options(sub)


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    inspect = app.control.inspect(options["destination"], timeout=options["timeout"])
    method = options["inspect_method"]
    if method == "query_task":
        replies = inspect.query_task(options["task_ids"])
    elif method == "registered":
        replies = inspect.registered(*options["taskinfoitems"])
    elif method == "conf":
        replies = inspect.conf(with_defaults=options["with_defaults"])
    else:
        replies = getattr(inspect, method)()
    return print_replies(replies, options, stdout, stderr)
