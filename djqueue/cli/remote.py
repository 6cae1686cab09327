"""What ``control``, ``inspect`` and ``status`` share: the remote options and the reply printer."""

from __future__ import annotations

import json
import os
from argparse import ArgumentParser
from typing import Any, TextIO

from .arguments import names, positive_seconds

#: Exit status when no worker replied (``EX_UNAVAILABLE``, as Celery).
EX_UNAVAILABLE = os.EX_UNAVAILABLE
NO_REPLY = "Error: No nodes replied within time constraint."


def add_remote_options(parser: ArgumentParser, timeout: float = 1.0) -> None:
    parser.add_argument("-d", "--destination", type=names, default=None,
                        help="Comma-separated node names (default: every worker).")
    parser.add_argument("-t", "--timeout", type=positive_seconds, default=timeout,
                        help=f"Seconds to wait for replies (default {timeout}).")
    parser.add_argument("-j", "--json", action="store_true", help="Print the replies as JSON.")


def _indented(text: str, indent: str = "    ") -> str:
    return "\n".join(indent + line for line in text.splitlines())


def describe(reply: Any) -> tuple[bool, str]:
    """``(ok, text)`` for one node's reply, as the command line prints it."""
    if isinstance(reply, dict) and set(reply) == {"error"}:
        return False, _indented(str(reply["error"]))
    if isinstance(reply, dict) and set(reply) == {"ok"}:
        return True, _indented(str(reply["ok"]), "        " if reply["ok"] == "pong" else "    ")
    if isinstance(reply, list):
        if not reply:
            return True, "    - empty -"
        return True, "\n".join(  # names as they are (``* tasks.add``), as Celery prints them
            "    * " + (item if isinstance(item, str) else json.dumps(item, sort_keys=True,
                                                                  default=repr))
            for item in reply)
    return True, _indented(json.dumps(reply, indent=4, sort_keys=True, default=repr))


def print_replies(replies: dict[str, Any] | None, options: dict[str, Any], stdout: TextIO,
                  stderr: TextIO) -> int:
    """Print ``{node: reply}``; returns the exit status (69 when nobody replied, 1 on errors)."""
    if not replies:
        stderr.write(NO_REPLY + "\n")
        return EX_UNAVAILABLE
    if options["json"]:
        stdout.write(json.dumps(replies, sort_keys=True, default=repr) + "\n")
        return 0
    status = 0
    for node in sorted(replies):
        ok, text = describe(replies[node])
        stdout.write(f"-> {node}: {'OK' if ok else 'ERROR'}\n{text}\n")
        status = status if ok else 1
    return status


def usage_error(message: str, stderr: TextIO) -> int:
    stderr.write(f"Error: {message}\n")
    return os.EX_USAGE
