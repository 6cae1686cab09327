"""Logging set-up shared by the long-running subcommands (worker, beat), with Celery's logging
signals: a ``setup_logging`` receiver takes the set-up over entirely; ``after_setup_logger`` and
``after_setup_task_logger`` receivers may adjust what was set up."""

from __future__ import annotations

import logging
import sys

from .. import signals
from ..client.base import app
from ..utils.log import TASK_LOG_FORMAT, JsonFormatter, TaskFormatter, task_logger, track_running_task

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


def loglevel(value: str) -> str:
    """argparse type for ``-l/--loglevel``."""
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ValueError(value)
    return "CRITICAL" if level == "FATAL" else level


def _handler(logfile: str | None) -> logging.Handler:
    # A log file escapes what it cannot encode, as stderr does: a lone surrogate in a task's own
    # log line (a file name os.fsdecode could not decode) would otherwise lose the line.
    return (logging.FileHandler(logfile, errors="backslashreplace") if logfile
            else logging.StreamHandler(sys.stderr))


def configure_logging(level: str, logfile: str | None) -> None:
    """Log to ``logfile`` (stderr when None) in ``DJQUEUE_LOG_FORMAT``: Celery's text lines, the
    task logger's naming the running task, or one JSON object a line."""
    as_json = app.conf.DJQUEUE_LOG_FORMAT == "json"
    fmt = "json" if as_json else LOG_FORMAT
    if signals.setup_logging.send(sender=None, loglevel=level, logfile=logfile, format=fmt,
                                  colorize=False):
        return  # a receiver configured logging its own way (Celery's rule)
    root = logging.getLogger()
    handler = _handler(logfile)
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    signals.after_setup_logger.send(sender=None, logger=root, loglevel=level, logfile=logfile,
                                    format=fmt, colorize=False)
    if as_json:
        track_running_task()  # task lines carry the task's fields; the root handler writes them
    else:
        task_handler = _handler(logfile)
        task_handler.setFormatter(TaskFormatter(TASK_LOG_FORMAT))
        task_logger.addHandler(task_handler)
        task_logger.propagate = False
    signals.after_setup_task_logger.send(
        sender=None, logger=task_logger, loglevel=level, logfile=logfile,
        format=fmt if as_json else TASK_LOG_FORMAT, colorize=False)
