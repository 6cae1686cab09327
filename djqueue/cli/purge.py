"""``celery purge``: delete every waiting message of the known (or given) queues."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any, TextIO

from ..client.base import app
from ..broker.monitor import queue_names
from .arguments import names

HELP = "Delete all waiting task messages (there is no undo)."


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("-Q", "--queues", type=names, default=None,
                        help="Comma-separated queues to purge (default: every known queue).")
    parser.add_argument("-f", "--force", action="store_true", help="Do not ask for confirmation.")


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    using = app.conf.broker_alias
    queues = options["queues"] or sorted({app.conf.CELERY_DEFAULT_QUEUE, *queue_names(using)})
    if not options["force"]:
        stdout.write(
            f"WARNING: every waiting task of these queues will be deleted: {', '.join(queues)}.\n"
            "This cannot be undone. (Use -f to skip this question.)\n\n"
            "Delete them (yes/NO)? "
        )
        stdout.flush()
        if sys.stdin.readline().strip().lower() not in {"y", "yes"}:
            stdout.write("Nothing purged.\n")
            return 0
    count = app.control.purge(queues)
    if count:
        stdout.write(f"Purged {_plural(count, 'message')} from "
                     f"{_plural(len(queues), 'known task queue')}.\n")
    else:
        stdout.write(f"No messages purged from {_plural(len(queues), 'queue')}.\n")
    return 0
