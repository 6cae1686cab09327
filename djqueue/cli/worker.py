"""``celery worker``: start a worker."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any, TextIO

from ..client.base import app
from ..client.call_checks import check_time_limits
from ..worker.banner import banner
from ..beat.scheduler import start_embedded, stop_embedded
from ..worker.loop import Worker
from .arguments import names, positive_int, positive_seconds
from .logs import configure_logging, loglevel
from .remote import usage_error

HELP = "Start a worker."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("-l", "--loglevel", type=loglevel, default="WARNING",
                        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default WARNING).")
    parser.add_argument("-c", "--concurrency", type=positive_int, default=None,
                        help="Tasks run at once (default CELERYD_CONCURRENCY, else the CPU count).")
    parser.add_argument("-P", "--pool", choices=["prefork", "threads", "solo"], default=None,
                        help="Pool: prefork (default), threads or solo.")
    parser.add_argument("-Q", "--queues", type=names, default=None,
                        help="Comma-separated queues to consume (default: the default queue).")
    parser.add_argument("-n", "--hostname", default=None,
                        help="Node name (default celery@%%h; %%h, %%n and %%d are expanded).")
    parser.add_argument("--logfile", default=None, help="Log to this file instead of stderr.")
    parser.add_argument("--prefetch-multiplier", type=positive_int, default=None,
                        help="Messages reserved per pool slot (default CELERYD_PREFETCH_MULTIPLIER, 4).")
    parser.add_argument("--time-limit", type=positive_seconds, default=None,
                        help="Hard time limit in seconds: the child running the task is killed "
                             "(default CELERYD_TASK_TIME_LIMIT).")
    parser.add_argument("--soft-time-limit", type=positive_seconds, default=None,
                        help="Soft time limit in seconds: SoftTimeLimitExceeded is raised in the "
                             "task (default CELERYD_TASK_SOFT_TIME_LIMIT).")
    parser.add_argument("--maxtasksperchild", "--max-tasks-per-child", type=positive_int,
                        default=None, dest="max_tasks_per_child",
                        help="Replace a pool child after it ran this many tasks.")
    parser.add_argument("-B", "--beat", action="store_true",
                        help="Also run the periodic-task scheduler, in a child process.")
    parser.add_argument("-E", "--task-events", "--events", action="store_true",
                        dest="task_events",
                        help="Write task and worker events for `celery events` "
                             "(default CELERY_SEND_EVENTS).")


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    configure_logging(options["loglevel"], options["logfile"])
    if options["task_events"]:
        app.conf.CELERY_SEND_EVENTS = True
    worker = Worker(
        app,
        queues=options["queues"],
        concurrency=options["concurrency"],
        pool=options["pool"],
        hostname=options["hostname"],
        prefetch_multiplier=options["prefetch_multiplier"],
        time_limit=options["time_limit"],
        soft_time_limit=options["soft_time_limit"],
        max_tasks_per_child=options["max_tasks_per_child"],
    )
    try:
        check_time_limits(worker.soft_time_limit, worker.time_limit, "The worker")
    except ValueError as exc:
        return usage_error(str(exc), stderr)
    stdout.write(banner(worker))
    stdout.flush()
    beat = start_embedded(app) if options["beat"] else None
    try:
        worker.run()
    finally:
        if beat is not None:
            stop_embedded(beat)
    return 0
