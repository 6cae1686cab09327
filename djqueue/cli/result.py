"""``celery result <id>``: print a task's result (or its traceback)."""

from __future__ import annotations

import pprint
from argparse import ArgumentParser
from typing import Any, TextIO

from .. import states
from ..client.base import app
from ..exceptions import DjqueueError

HELP = "Print the result of a task."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("task_id")
    parser.add_argument("--traceback", action="store_true", help="Print the traceback instead.")


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    result = app.AsyncResult(options["task_id"])
    try:
        state = result.state
        if options["traceback"]:
            stdout.write((result.traceback or "") + ("" if (result.traceback or "").endswith("\n") else "\n"))
            return 0
        if state not in states.READY_STATES:
            stderr.write(f"Task {result.id} is {state}: no result yet.\n")
            return 1
        value = result.get(propagate=False)
    except DjqueueError as exc:
        stderr.write(f"Error: {exc}\n")
        return 1
    if isinstance(value, BaseException):
        stdout.write(f"{state}: {type(value).__name__}: {value}\n")
        return 1
    stdout.write(pprint.pformat(value) + "\n")
    return 0
