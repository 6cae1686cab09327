"""Demo tasks (found by autodiscovery: this is the ``tasks`` module of an installed app)."""

import os
import time

from djqueue import task


class DemoError(Exception):
    """Raised by :func:`fail` so callers see a task's own exception class come back."""


@task
def fail(message="something went wrong"):
    """Always fails; ``result.get()`` re-raises DemoError, ``result.traceback`` shows where."""
    raise DemoError(message)


@task
def sleep(seconds, value=None):
    """Takes its time: for watching shutdowns and concurrency."""
    time.sleep(seconds)
    return value


@task
def record(key):
    """Appends ``key`` and this process's pid to the file named by DJQUEUE_RECORD_FILE.

    Each call is one line, so counting lines counts executions (not just results).
    """
    line = f"{key} {os.getpid()}\n".encode()
    fd = os.open(os.environ["DJQUEUE_RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return key
