"""``celery control <command>``: change running workers (rate and time limits, queues, pool size,
revocations, shutdown)."""

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any, TextIO

from ..worker import control_arguments
from ..client.base import app
from ..client.control import merge_replies, normalize_rate, stored_rate_limit
from ..worker.control_arguments import ControlError
from ..exceptions import DjqueueError
from .arguments import positive_int
from .remote import add_remote_options, print_replies, usage_error

HELP = "Send a remote-control command to the workers."


def _seconds(value: str) -> float | None:
    """A time limit as the workers take it (``none``: no limit)."""
    try:
        return control_arguments.seconds(None if value.lower() in {"none", ""} else value,
                                         "time limit")
    except ControlError as exc:
        raise ArgumentTypeError(str(exc)) from None


def _queue(value: str) -> str:
    try:
        return control_arguments.queue(value)
    except ControlError as exc:
        raise ArgumentTypeError(str(exc)) from None


def add_arguments(parser: ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="control_command", metavar="command", required=True)
    rate = commands.add_parser("rate_limit", help="Override a task's rate limit (10/s, 10/m, 10/h, "
                               "0 = no limit); stored until reset_rate_limit.")
    rate.add_argument("task_name")
    rate.add_argument("rate_limit")
    commands.add_parser("reset_rate_limit", help="Remove a task's rate-limit override: back to "
                        "the configured limit.").add_argument("task_name")
    limits = commands.add_parser("time_limit", help="Set a task's soft and hard time limits (seconds).")
    limits.add_argument("task_name")
    limits.add_argument("soft", type=_seconds)
    limits.add_argument("hard", type=_seconds, nargs="?", default=None)
    revoke = commands.add_parser("revoke", help="Revoke task ids (stored: later workers obey too).")
    revoke.add_argument("task_ids", nargs="+", metavar="task_id")
    revoke.add_argument("--terminate", action="store_true", help="Also stop them if they run.")
    revoke.add_argument("--signal", default="SIGTERM", help="Signal for --terminate (default SIGTERM).")
    for name, text in (("add_consumer", "Start consuming from a queue."),
                       ("cancel_consumer", "Stop consuming from a queue."),
                       ("pause_queue", "Pause a queue for every worker (stored: survives "
                        "restarts); its messages wait."),
                       ("resume_queue", "Resume a paused queue.")):
        commands.add_parser(name, help=text).add_argument("queue", type=_queue)
    for name, text in (("pool_grow", "Add pool processes/threads."),
                       ("pool_shrink", "Remove pool processes/threads.")):
        commands.add_parser(name, help=text).add_argument("n", type=positive_int, nargs="?", default=1)
    commands.add_parser("shutdown", help="Warm shutdown of the workers.")
    for sub in commands.choices.values():
        add_remote_options(sub)


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    try:
        replies = _send(options)
    except (ValueError, DjqueueError) as exc:
        return usage_error(str(exc), stderr)
    replies = merge_replies(replies)
    stored = None if options["json"] else _stored(options)
    if stored:
        stdout.write(stored + "\n")
        if not replies:  # what the command is for is done: workers read it when they start
            stdout.write("No worker replied: none is running (or none answered in time); each "
                         "worker applies this when it starts.\n")
            return 0
    return print_replies(replies, options, stdout, stderr)


def _stored(options: dict[str, Any]) -> str | None:
    """What the command stored for workers to read (flow control), as one line."""
    command = options["control_command"]
    if command == "rate_limit":
        name = options["task_name"]
        try:
            rate = normalize_rate(options["rate_limit"])
        except ValueError:
            return None  # nothing stored: the workers reply with the error
        if stored_rate_limit(name, app.conf.broker_alias) != rate:
            return None  # a task not registered here: nothing stored
        return (f"Stored rate-limit override: {name} = {'no limit' if rate == '0' else rate}; "
                f"it lasts until 'celery control reset_rate_limit {name}'.")
    if command == "reset_rate_limit":
        return (f"Removed the rate-limit override of {options['task_name']}: its configured "
                "limit applies.")
    if command == "pause_queue":
        return f"Stored: queue {options['queue']} is paused (until resume_queue)."
    if command == "resume_queue":
        return f"Removed the pause of queue {options['queue']}."
    return None


def _send(options: dict[str, Any]) -> list[dict[str, Any]] | None:
    control = app.control
    command = options["control_command"]
    remote = {"destination": options["destination"], "reply": True, "timeout": options["timeout"]}
    if command == "rate_limit":
        return control.rate_limit(options["task_name"], options["rate_limit"], **remote)
    if command == "time_limit":
        control_arguments.time_limits(options["soft"], options["hard"])  # soft ≤ hard
        return control.time_limit(options["task_name"], options["soft"], options["hard"], **remote)
    if command == "revoke":
        return control.revoke(options["task_ids"], terminate=options["terminate"],
                              signal=options["signal"], **remote)
    if command == "reset_rate_limit":
        return control.reset_rate_limit(options["task_name"], **remote)
    if command in {"add_consumer", "cancel_consumer", "pause_queue", "resume_queue"}:
        return getattr(control, command)(options["queue"], **remote)
    if command in {"pool_grow", "pool_shrink"}:
        return getattr(control, command)(options["n"], **remote)
    return control.shutdown(**remote)
