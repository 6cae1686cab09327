"""``celery status``: which workers answer a ping."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any, TextIO

from ..client.base import app
from .remote import EX_UNAVAILABLE, NO_REPLY, add_remote_options

HELP = "List the workers that are online."


def add_arguments(parser: ArgumentParser) -> None:
    add_remote_options(parser)


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    replies = app.control.inspect(options["destination"], timeout=options["timeout"]).ping()
    if not replies:
        stderr.write(NO_REPLY + "\n")
        return EX_UNAVAILABLE
    if options["json"]:
        stdout.write(json.dumps(replies, sort_keys=True) + "\n")
        return 0
    for node in sorted(replies):
        stdout.write(f"{node}: OK\n")
    count = len(replies)
    stdout.write(f"\n{count} {'node' if count == 1 else 'nodes'} online.\n")
    return 0
