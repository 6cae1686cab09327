"""``celery beat``: run the periodic-task scheduler."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any, TextIO

from .. import __version__
from ..client.base import app
from ..beat.scheduler import Beat
from .logs import configure_logging, loglevel

HELP = "Start the periodic-task scheduler (beat)."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("-l", "--loglevel", type=loglevel, default="WARNING",
                        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default WARNING).")
    parser.add_argument("--logfile", default=None, help="Log to this file instead of stderr.")


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    configure_logging(options["loglevel"], options["logfile"])
    beat = Beat(app)
    stdout.write(
        f"celery beat v{__version__} (djqueue) is starting.\n"
        f"Configuration ->\n"
        f"    . broker -> django://{beat.using}\n"
        f"    . scheduler -> djqueue.beat.Beat (database; one active among all beats)\n"
        f"    . logfile -> {options['logfile'] or '[stderr]'}@%{options['loglevel']}\n"
        f"    . maxinterval -> {beat.max_interval:g}s\n"
        f"    . lease -> {beat.lease_seconds:g}s\n"
    )
    stdout.flush()
    beat.run()
    return 0
