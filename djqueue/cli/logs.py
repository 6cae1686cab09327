"""Logging set-up shared by the long-running subcommands (worker, beat)."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


def loglevel(value: str) -> str:
    """argparse type for ``-l/--loglevel``."""
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ValueError(value)
    return "CRITICAL" if level == "FATAL" else level


def configure_logging(level: str, logfile: str | None) -> None:
    # A log file escapes what it cannot encode, as stderr does: a lone surrogate in a task's own
    # log line (a file name os.fsdecode could not decode) would otherwise lose the line.
    handler: logging.Handler = (
        logging.FileHandler(logfile, errors="backslashreplace") if logfile
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
