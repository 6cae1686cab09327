"""``python manage.py celery <command>``: argument parsing only; the work is done elsewhere."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from djqueue.app import app
from djqueue.banner import banner
from djqueue.exceptions import ImproperlyConfigured
from djqueue.worker import Worker

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


def configure_logging(loglevel: str, logfile: str | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(loglevel)


def _queues(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise ValueError("no queue named")
    return queues


def _loglevel(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ValueError(value)
    return "CRITICAL" if level == "FATAL" else level


class Command(BaseCommand):
    help = "Celery's command line for djqueue: start a worker and more."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", metavar="command", required=True)
        worker = commands.add_parser("worker", help="Start a worker.")
        worker.add_argument("-l", "--loglevel", type=_loglevel, default="WARNING",
                            help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default WARNING).")
        worker.add_argument("-c", "--concurrency", type=int, default=None,
                            help="Tasks run at once (default CELERYD_CONCURRENCY, else CPUs).")
        worker.add_argument("-P", "--pool", choices=["prefork", "threads", "solo"], default=None,
                            help="Pool: prefork (default), threads or solo.")
        worker.add_argument("-Q", "--queues", type=_queues, default=None,
                            help="Comma-separated queues to consume (default: the default queue).")
        worker.add_argument("-n", "--hostname", default=None,
                            help="Node name (default celery@%%h; %%h, %%n, %%d are expanded).")
        worker.add_argument("--logfile", default=None, help="Log to this file instead of stderr.")
        worker.add_argument("--prefetch-multiplier", type=int, default=None,
                            help="Messages reserved per pool slot (default 4).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["command"] == "worker":
            self.worker(options)

    def worker(self, options: dict[str, Any]) -> None:
        if options["concurrency"] is not None and options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        configure_logging(options["loglevel"], options["logfile"])
        try:
            worker = Worker(
                app,
                queues=options["queues"],
                concurrency=options["concurrency"],
                pool=options["pool"],
                hostname=options["hostname"],
                prefetch_multiplier=options["prefetch_multiplier"],
            )
            self.stdout.write(banner(worker))
            self.stdout.flush()
            worker.run()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
