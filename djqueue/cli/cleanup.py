"""``celery cleanup``: remove results older than ``CELERY_TASK_RESULT_EXPIRES``."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any, TextIO

from ..client.base import app

HELP = "Remove expired task results (older than CELERY_TASK_RESULT_EXPIRES)."


def add_arguments(parser: ArgumentParser) -> None:
    """No options: the expiry comes from the settings."""


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    backend = app.backend
    if not backend.enabled:
        stdout.write("No result backend is configured: there are no results to remove.\n")
        return 0
    removed = backend.cleanup()
    if removed is None:
        stdout.write(f"The {app.conf.CELERY_RESULT_BACKEND} result backend expires results "
                     "by itself: nothing to do.\n")
    else:
        stdout.write(f"Removed {removed} expired result(s).\n")
    return 0
