"""Task loggers and log formats: Celery's ``celery.utils.log`` under djqueue's name.

``get_task_logger(__name__)`` gives a logger whose records go through the ``djqueue.task``
logger; the worker (:func:`djqueue.cli.logs.configure_logging`) gives that one a handler whose
lines name the running task, as Celery's task log format does. ``DJQUEUE_LOG_FORMAT = "json"``
(or ``celery worker --log-format json``) writes every line as one JSON object, and a line about a
task carries ``task_id``, ``task_name``, ``queue``, ``worker`` and ``retries``.

Which task is running is learnt from the ``task_prerun``/``task_postrun`` signals, connected only
once a task logger or the JSON format is asked for: a project using neither pays nothing.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from typing import Any

from .. import signals

TASK_LOGGER_NAME = "djqueue.task"
#: Names :func:`get_task_logger` refuses, as Celery refuses its own.
RESERVED_LOGGER_NAMES = frozenset(("djqueue", TASK_LOGGER_NAME, "celery", "celery.task"))
#: Celery's default task log format (``worker_task_log_format``).
TASK_LOG_FORMAT = ("[%(asctime)s: %(levelname)s/%(processName)s] "
                   "%(task_name)s[%(task_id)s]: %(message)s")
#: The fields a JSON line about a task carries.
TASK_FIELDS = ("task_id", "task_name", "queue", "worker", "retries")

task_logger = logging.getLogger(TASK_LOGGER_NAME)

_running = threading.local()
_worker: dict[str, str] = {}  # the node name, once celeryd_init gave it


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """A logger for a task module (``logger = get_task_logger(__name__)``): its records pass
    through ``djqueue.task``, whose handler, in a worker, names the running task on each line."""
    if name in RESERVED_LOGGER_NAMES:
        raise RuntimeError(f"Logger name {name!r} is reserved!")
    logger = logging.getLogger(name)
    logger.parent = task_logger
    track_running_task()
    return logger


def track_running_task() -> None:
    """Keep the running task of each thread from the task signals (idempotent)."""
    signals.task_prerun.connect(_entered, dispatch_uid="djqueue.utils.log")
    signals.task_postrun.connect(_left, dispatch_uid="djqueue.utils.log")
    signals.celeryd_init.connect(_named, dispatch_uid="djqueue.utils.log")


def _entered(sender: Any = None, **_: Any) -> None:
    _running.__dict__.setdefault("stack", []).append(sender)


def _left(sender: Any = None, **_: Any) -> None:
    stack = _running.__dict__.get("stack")
    if stack:
        stack.pop()


def _named(sender: Any = None, **_: Any) -> None:
    _worker["name"] = str(sender)


def running_task() -> Any:
    """The task running in this thread (its ``request`` is the call's), or None."""
    stack = _running.__dict__.get("stack")
    return stack[-1] if stack else None


def task_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """The task a record is about: the one its worker line names (``extra={"djqueue_task":
    job_or_message}``), else the task running in the thread that logged it; None for neither."""
    about = getattr(record, "djqueue_task", None)
    if about is not None:
        return {"task_id": about.task_id, "task_name": about.task_name, "queue": about.queue,
                "worker": getattr(about, "hostname", None) or _worker.get("name"),
                "retries": about.retries}
    task = running_task()
    if task is None:
        return None
    request = task.request
    return {"task_id": request.id, "task_name": task.name,
            "queue": (request.delivery_info or {}).get("routing_key"),
            "worker": request.hostname or _worker.get("name"), "retries": request.retries}


class TaskFormatter(logging.Formatter):
    """Celery's task log format: ``%(task_name)s[%(task_id)s]`` are the running task's, ``???``
    outside one."""

    def __init__(self, fmt: str = TASK_LOG_FORMAT, **kwargs: Any) -> None:
        super().__init__(fmt, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        fields = task_fields(record) or {}
        record.task_id = fields.get("task_id") or "???"
        record.task_name = fields.get("task_name") or "???"
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``,
    ``process`` (Celery's process name: MainProcess, ForkPoolWorker-N), ``message``,
    ``exc_info`` when there is one, and the task's fields on a line about a task."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        fields = task_fields(record)
        if fields is not None:
            line.update(fields)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
