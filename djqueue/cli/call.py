"""``celery call <task> --args='[2, 2]'``: enqueue a task by name and print its id."""

from __future__ import annotations

import datetime
import json
from argparse import ArgumentParser
from typing import Any, TextIO

from ..client.base import app
from .remote import usage_error

HELP = "Call a task by name."


def _json(kind: type) -> Any:
    def parse(value: str) -> Any:
        data = json.loads(value)
        if not isinstance(data, kind):
            raise ValueError(f"expected a JSON {kind.__name__}")
        return data

    parse.__name__ = f"JSON {kind.__name__}"
    return parse


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("name", help="Task name, e.g. tasks.add.")
    parser.add_argument("-a", "--args", dest="task_args", metavar="JSON", type=_json(list), default=[],
                        help="Positional arguments as a JSON list, e.g. '[2, 2]'.")
    parser.add_argument("-k", "--kwargs", dest="task_kwargs", metavar="JSON", type=_json(dict), default={},
                        help="Keyword arguments as a JSON object.")
    parser.add_argument("--countdown", type=float, default=None, help="Run in N seconds.")
    parser.add_argument("--eta", type=datetime.datetime.fromisoformat, default=None,
                        help="Run at this ISO 8601 time (naive = UTC).")
    parser.add_argument("--expires", type=float, default=None, help="Expire after N seconds.")
    parser.add_argument("-Q", "--queue", default=None, help="Queue (default: routing).")
    parser.add_argument("--priority", type=int, default=None, help="0-255, higher first.")


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    try:
        result = app.send_task(
            options["name"], options["task_args"], options["task_kwargs"], countdown=options["countdown"],
            eta=options["eta"], expires=options["expires"], queue=options["queue"],
            priority=options["priority"],
        )
    except (TypeError, ValueError) as exc:
        return usage_error(str(exc), stderr)
    stdout.write(result.id + "\n")
    return 0
